//! A bounded set of names each remembered until its own expiry: the used OAuth states and the signed-out session ids the `Accounts` object keeps.

use std::collections::BTreeMap;

/// Names with their expiry (seconds). Expired names are pruned whenever one is added, and the set
/// never holds more than `max`: what happens at the bound is the caller's choice ([`Overflow`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExpiringSet {
    max: usize,
    entries: BTreeMap<String, u64>,
}

/// What to do when a name is added to a full set (after pruning).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overflow {
    /// Forget the names closest to expiry (fine for one-time states: their codes are one-time too).
    EvictSoonest,
    /// Add nothing and say so: forgetting a name would let it back in.
    Refuse,
}

/// What one [`ExpiringSet::insert`] did: the names to delete from storage, and whether the name was
/// added (false: already present, already expired, or refused at the bound).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Inserted {
    pub added: bool,
    pub full: bool,
    pub dropped: Vec<String>,
}

impl ExpiringSet {
    pub fn new(max: usize) -> Self {
        ExpiringSet {
            max: max.max(1),
            entries: BTreeMap::new(),
        }
    }

    /// Takes back stored entries; answers the expired ones (to delete from storage).
    pub fn restore(
        &mut self,
        stored: impl IntoIterator<Item = (String, u64)>,
        now_s: u64,
    ) -> Vec<String> {
        let mut expired = Vec::new();
        for (name, exp) in stored {
            if exp <= now_s {
                expired.push(name);
            } else {
                self.entries.insert(name, exp);
            }
        }
        expired
    }

    /// Whether `name` is remembered and not yet expired.
    pub fn contains(&self, name: &str, now_s: u64) -> bool {
        self.entries.get(name).is_some_and(|exp| *exp > now_s)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Forgets every name; answers them (to delete from storage).
    pub fn clear(&mut self) -> Vec<String> {
        std::mem::take(&mut self.entries).into_keys().collect()
    }

    /// Remembers `name` until `exp_s`, pruning expired names first.
    pub fn insert(&mut self, name: &str, exp_s: u64, now_s: u64, overflow: Overflow) -> Inserted {
        let mut dropped: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, exp)| **exp <= now_s)
            .map(|(n, _)| n.clone())
            .collect();
        for n in &dropped {
            self.entries.remove(n);
        }
        if self.entries.contains_key(name) || exp_s <= now_s {
            return Inserted {
                added: false,
                full: false,
                dropped,
            };
        }
        while self.entries.len() >= self.max {
            if overflow == Overflow::Refuse {
                return Inserted {
                    added: false,
                    full: true,
                    dropped,
                };
            }
            let soonest = self
                .entries
                .iter()
                .min_by_key(|(_, exp)| **exp)
                .map(|(n, _)| n.clone());
            let Some(n) = soonest else { break };
            self.entries.remove(&n);
            dropped.push(n);
        }
        self.entries.insert(name.to_string(), exp_s);
        Inserted {
            added: true,
            full: false,
            dropped,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_remembered_until_they_expire() {
        let mut s = ExpiringSet::new(10);
        assert!(s.insert("a", 100, 0, Overflow::Refuse).added);
        assert!(s.contains("a", 99));
        assert!(!s.contains("a", 100));
        // Present: not added again. Already expired: not added.
        assert!(!s.insert("a", 200, 0, Overflow::Refuse).added);
        assert!(!s.insert("b", 5, 5, Overflow::Refuse).added);
        // Adding prunes the expired.
        let r = s.insert("c", 300, 150, Overflow::Refuse);
        assert_eq!(r.dropped, ["a"]);
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn a_full_set_evicts_the_soonest_or_refuses() {
        let mut s = ExpiringSet::new(2);
        s.insert("late", 500, 0, Overflow::EvictSoonest);
        s.insert("soon", 100, 0, Overflow::EvictSoonest);
        let r = s.insert("new", 300, 0, Overflow::EvictSoonest);
        assert_eq!((r.added, r.dropped), (true, vec!["soon".to_string()]));
        assert!(s.contains("late", 0) && s.contains("new", 0));
        assert_eq!(s.len(), 2);

        let r = s.insert("other", 300, 0, Overflow::Refuse);
        assert_eq!((r.added, r.full), (false, true));
        assert!(!s.contains("other", 0));
        // Pruning can make room.
        assert!(s.insert("other", 900, 400, Overflow::Refuse).added);
        assert_eq!(s.clear().len(), 2);
        assert!(s.is_empty());
    }

    #[test]
    fn restore_keeps_the_live_and_answers_the_expired() {
        let mut s = ExpiringSet::new(10);
        let expired = s.restore([("a".to_string(), 10), ("b".to_string(), 50)], 10);
        assert_eq!(expired, ["a"]);
        assert!(s.contains("b", 10));
    }
}
