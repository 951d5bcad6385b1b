//! The answers a locker already gave, by message id: a retried device call gets the same
//! answer instead of a second action. Pure: no actor, no database.

use std::collections::{HashMap, VecDeque};

/// How many answered message ids each locker remembers for deduplication.
pub(super) const DEDUP_CAPACITY: usize = 512;

/// Answers already given, by message id: a retried call gets the same answer, not a second action.
#[derive(Default)]
pub(super) struct Dedup {
    order: VecDeque<String>,
    answers: HashMap<String, (String, String)>,
}

impl Dedup {
    pub(super) fn get(&self, id: &str, fingerprint: &str) -> Option<String> {
        self.answers
            .get(id)
            .filter(|(f, _)| f == fingerprint)
            .map(|(_, a)| a.clone())
    }

    pub(super) fn put(&mut self, id: String, fingerprint: String, answer: String) {
        if self.answers.insert(id.clone(), (fingerprint, answer)).is_none() {
            self.order.push_back(id);
            if self.order.len() > DEDUP_CAPACITY {
                if let Some(old) = self.order.pop_front() {
                    self.answers.remove(&old);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retry_gets_the_same_answer_and_a_reused_id_does_not() {
        let mut d = Dedup::default();
        d.put("1".into(), "fp-a".into(), "answer-a".into());
        assert_eq!(d.get("1", "fp-a").as_deref(), Some("answer-a"));
        // Same id, other content (a device that rebooted and counts from 1 again): not a retry.
        assert_eq!(d.get("1", "fp-b"), None);
        assert_eq!(d.get("2", "fp-a"), None);
    }

    #[test]
    fn a_repeated_id_keeps_one_entry_and_the_oldest_ids_are_forgotten() {
        let mut d = Dedup::default();
        d.put("1".into(), "fp".into(), "first".into());
        d.put("1".into(), "fp".into(), "second".into());
        assert_eq!(d.get("1", "fp").as_deref(), Some("second"));
        for i in 2..=DEDUP_CAPACITY + 1 {
            d.put(i.to_string(), "fp".into(), format!("a{i}"));
        }
        // Capacity reached by ids 2..=CAPACITY+1: id 1 (the oldest) went, the rest stay.
        assert_eq!(d.get("1", "fp"), None);
        assert_eq!(d.get("2", "fp").as_deref(), Some("a2"));
        let last = (DEDUP_CAPACITY + 1).to_string();
        assert_eq!(d.get(&last, "fp"), Some(format!("a{last}")));
        assert_eq!(d.order.len(), DEDUP_CAPACITY);
        assert_eq!(d.answers.len(), DEDUP_CAPACITY);
    }
}
