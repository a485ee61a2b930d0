//! keel runtime
