//! The error type of the statistics: every variant names the input concerned and renders
//! as one line a user can act on. Functions that cannot fail return plain values; the
//! ones that take user data validate it up front (empty, non-finite, negative counts,
//! mismatched lengths) and never panic.

/// `Result` with [`StatsError`].
pub type Result<T> = std::result::Result<T, StatsError>;

/// What can be wrong with the input of a statistic.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StatsError {
    /// A sample or count vector with no elements.
    #[error("{what} is empty: the statistic needs at least one value")]
    Empty { what: &'static str },
    /// A NaN or infinite value; statistics here are defined on finite numbers only.
    #[error("{what}[{index}] is {value}: only finite numbers are accepted (NaN and infinities are rejected)")]
    NonFinite { what: &'static str, index: usize, value: f64 },
    /// A negative count or probability.
    #[error("{what}[{index}] is {value}: counts and probabilities must not be negative")]
    Negative { what: &'static str, index: usize, value: f64 },
    /// Two vectors that must be aligned (same categories or bins) have different lengths.
    #[error("{what}: lengths differ ({left} vs {right}); both must cover the same categories or bins")]
    LengthMismatch { what: &'static str, left: usize, right: usize },
    /// A count vector whose entries are all zero cannot be normalized to a distribution.
    #[error("{what} sums to zero: it cannot be normalized to a probability distribution")]
    ZeroTotal { what: &'static str },
    /// A parameter outside its documented range (number of bins, quantile level, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}
