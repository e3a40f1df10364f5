//! Copy-on-write state for saves in the background.
//!
//! A stage that saves its state every few seconds keeps each agent's part
//! behind an `Arc`: a snapshot is then a copy of pointers (10,000 agents'
//! detection state took ~30 ms to clone, on the async runtime, and showed
//! as a spike in acknowledgement latency), and `Arc::make_mut` copies an
//! agent's part only when it changes while a save still holds it.

/// Serde helpers for a map whose values are `Arc`s, saved and read as the
/// plain map (so the saved format is the same as without them):
/// `#[serde(with = "crate::snapshot::arc_values")]`.
pub mod arc_values {
    use std::hash::Hash;
    use std::sync::Arc;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    /// Writes the map as if its values were not behind `Arc`s.
    pub fn serialize<'m, M, K, V, S>(map: &'m M, s: S) -> Result<S::Ok, S::Error>
    where
        &'m M: IntoIterator<Item = (&'m K, &'m Arc<V>)>,
        K: Serialize + 'm,
        V: Serialize + 'm,
        S: Serializer,
    {
        s.collect_map(map.into_iter().map(|(k, v)| (k, &**v)))
    }

    /// Reads a plain map and puts each value behind an `Arc`.
    pub fn deserialize<'de, M, K, V, D>(d: D) -> Result<M, D::Error>
    where
        M: FromIterator<(K, Arc<V>)>,
        K: Deserialize<'de> + Eq + Hash,
        V: Deserialize<'de>,
        D: Deserializer<'de>,
    {
        let plain = std::collections::HashMap::<K, V>::deserialize(d)?;
        Ok(plain.into_iter().map(|(k, v)| (k, Arc::new(v))).collect())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct Plain {
        agents: BTreeMap<String, Vec<u32>>,
    }

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct Shared {
        #[serde(with = "super::arc_values")]
        agents: BTreeMap<String, Arc<Vec<u32>>>,
    }

    #[test]
    fn a_map_of_arcs_is_saved_and_read_as_the_plain_map() {
        let shared = Shared {
            agents: [
                ("a".to_string(), Arc::new(vec![1, 2])),
                ("b".into(), Arc::new(vec![])),
            ]
            .into_iter()
            .collect(),
        };
        let json = serde_json::to_string(&shared).unwrap();
        assert_eq!(json, r#"{"agents":{"a":[1,2],"b":[]}}"#);
        let plain: Plain = serde_json::from_str(&json).unwrap();
        assert_eq!(serde_json::to_string(&plain).unwrap(), json);
        assert_eq!(serde_json::from_str::<Shared>(&json).unwrap(), shared);
    }

    #[test]
    fn a_snapshot_keeps_what_it_saw_while_the_state_moves_on() {
        let mut state: BTreeMap<String, Arc<Vec<u32>>> =
            [("a".to_string(), Arc::new(vec![1]))].into_iter().collect();
        let snapshot = state.clone();
        Arc::make_mut(state.get_mut("a").unwrap()).push(2);
        assert_eq!(*snapshot["a"], vec![1]);
        assert_eq!(*state["a"], vec![1, 2]);
    }
}
