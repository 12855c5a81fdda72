//! Bounded per-client tables, shared by the login throttle and the rate limiter, so memory stays capped under many clients.

use std::collections::BTreeMap;

/// Makes room for one more client: drops the entries `stale` says are done, then, if the table
/// is still full, the least recently active one.
pub fn make_room<V>(
    clients: &mut BTreeMap<String, V>,
    max: usize,
    stale: impl Fn(&V) -> bool,
    last_active: impl Fn(&V) -> u64,
) {
    clients.retain(|_, v| !stale(v));
    if clients.len() >= max {
        let oldest = clients
            .iter()
            .min_by_key(|(_, v)| last_active(v))
            .map(|(k, _)| k.clone());
        if let Some(k) = oldest {
            clients.remove(&k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_stale_first_then_the_oldest() {
        let mut t: BTreeMap<String, u64> = [("a", 5), ("b", 1), ("c", 9)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        make_room(&mut t, 3, |&v| v == 9, |&v| v);
        assert_eq!(
            t.keys().collect::<Vec<_>>(),
            ["a", "b"],
            "stale entry dropped, room made without evicting"
        );
        make_room(&mut t, 2, |_| false, |&v| v);
        assert_eq!(
            t.keys().collect::<Vec<_>>(),
            ["a"],
            "least recently active evicted"
        );
    }
}
