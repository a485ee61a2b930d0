//! Property: over random sequences of create_version / delete_version / delete_model /
//! create_model on two names, every created version is 1 + the number of versions ever
//! created for that name, no number is handed out twice, and get/search see exactly the
//! live versions and models.

mod common;

use std::collections::{BTreeSet, HashSet};

use common::{tiny_file, version_of};
use keel_registry::{Registry, RegistryError};
use proptest::prelude::*;

const NAMES: [&str; 2] = ["alpha", "main.beta.gamma"];

#[derive(Clone, Debug)]
enum Op {
    CreateVersion(usize),
    DeleteVersion(usize, usize),
    DeleteModel(usize),
    CreateModel(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..2usize).prop_map(Op::CreateVersion),
        2 => (0..2usize, any::<usize>()).prop_map(|(n, k)| Op::DeleteVersion(n, k)),
        1 => (0..2usize).prop_map(Op::DeleteModel),
        1 => (0..2usize).prop_map(Op::CreateModel),
    ]
}

#[derive(Default)]
struct Model {
    ever: u64,
    handed_out: HashSet<u64>,
    live_model: bool,
    live: BTreeSet<u64>,
}

fn check(r: &Registry, models: &[Model; 2]) -> Result<(), TestCaseError> {
    let live_names: Vec<&str> = NAMES.iter().zip(models).filter(|(_, m)| m.live_model).map(|(n, _)| *n).collect();
    let searched: Vec<String> = r.search_models("", 100, None).unwrap().items.into_iter().map(|m| m.name).collect();
    prop_assert_eq!(searched, live_names);
    for (name, m) in NAMES.iter().zip(models) {
        let found: Vec<u64> = r
            .search_versions(&format!("name = '{name}'"), 1000, None)
            .unwrap()
            .items
            .into_iter()
            .map(|v| v.version)
            .collect();
        let expected: Vec<u64> = m.live.iter().rev().copied().collect();
        prop_assert_eq!(found, expected);
        match r.get_model(name) {
            Ok(got) => {
                prop_assert!(m.live_model);
                prop_assert_eq!(got.latest_version, m.live.last().copied());
            }
            Err(RegistryError::NotFound(_)) => prop_assert!(!m.live_model),
            Err(e) => return Err(TestCaseError::fail(e.to_string())),
        }
        for v in 1..=m.ever + 1 {
            let got = r.get_version(name, v);
            if m.live.contains(&v) {
                prop_assert_eq!(got.unwrap().version, v);
            } else {
                prop_assert!(matches!(got, Err(RegistryError::NotFound(_))), "{} v{} should be gone", name, v);
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn versions_are_numbered_max_plus_one_and_never_reused(ops in proptest::collection::vec(op(), 1..28)) {
        let d = tempfile::tempdir().unwrap();
        let r = Registry::open(&d.path().join("home")).unwrap();
        let src = tiny_file(d.path(), "tiny.gguf", 1);
        let mut models: [Model; 2] = Default::default();
        for op in ops {
            match op {
                Op::CreateVersion(i) => {
                    let v = r.create_version(NAMES[i], version_of(&src)).unwrap().version;
                    let m = &mut models[i];
                    prop_assert_eq!(v, m.ever + 1);
                    prop_assert!(m.handed_out.insert(v), "version {} handed out twice", v);
                    m.ever += 1;
                    m.live.insert(v);
                    m.live_model = true;
                }
                Op::DeleteVersion(i, k) => {
                    let m = &mut models[i];
                    if m.live.is_empty() {
                        let missing = r.delete_version(NAMES[i], m.ever.max(1));
                        prop_assert!(matches!(missing, Err(RegistryError::NotFound(_))));
                    } else {
                        let v = *m.live.iter().nth(k % m.live.len()).unwrap();
                        r.delete_version(NAMES[i], v).unwrap();
                        m.live.remove(&v);
                    }
                }
                Op::DeleteModel(i) => {
                    let m = &mut models[i];
                    let res = r.delete_model(NAMES[i]);
                    if m.live_model {
                        res.unwrap();
                        m.live_model = false;
                        m.live.clear();
                    } else {
                        prop_assert!(matches!(res, Err(RegistryError::NotFound(_))));
                    }
                }
                Op::CreateModel(i) => {
                    let m = &mut models[i];
                    let res = r.create_model(NAMES[i], None, &[]);
                    if m.live_model {
                        prop_assert!(matches!(res, Err(RegistryError::AlreadyExists(_))));
                    } else {
                        res.unwrap();
                        m.live_model = true;
                    }
                }
            }
            check(&r, &models)?;
        }
    }
}
