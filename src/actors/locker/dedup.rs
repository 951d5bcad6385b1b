//! The answers a locker already gave, by message id: a retried device call gets the same
//! answer instead of a second action. Pure: no actor, no database.
//!
//! Only the last [`DEDUP_CAPACITY`] answers are kept. A device has one call outstanding at a
//! time and retries it within seconds, so a short window serves every retry; the results of
//! state-changing calls are also stored in the database (`db::device_calls`), which answers a
//! retry this window has forgotten. Each entry is one allocation for the id and one for the
//! answer, with the fingerprint inline: about 300 bytes for a typical answer.

use std::collections::VecDeque;

use crate::protocol::Fingerprint;

/// How many answered message ids each locker remembers in memory.
pub(super) const DEDUP_CAPACITY: usize = 64;

struct Remembered {
    id: Box<str>,
    fingerprint: Fingerprint,
    answer: Box<str>,
}

/// Answers already given, newest last.
#[derive(Default)]
pub(super) struct Dedup {
    recent: VecDeque<Remembered>,
}

impl Dedup {
    /// The answer to give a call with this id, if it is a retry (the same content).
    pub(super) fn get(&self, id: &str, fingerprint: &Fingerprint) -> Option<String> {
        self.recent
            .iter()
            .rev()
            .find(|r| &*r.id == id)
            .filter(|r| r.fingerprint == *fingerprint)
            .map(|r| r.answer.to_string())
    }

    /// Forgets the answer under `id`: a call that reused the id ran, and its answer is not
    /// one to remember (a heartbeat's, a failure), so a retry of the older call must not get
    /// the older answer either (docs/protocol.md, section 5: the new call's answer replaces it).
    pub(super) fn forget(&mut self, id: &str) {
        self.recent.retain(|r| &*r.id != id);
    }

    /// Remembers an answer; one given again under the same id replaces the older one.
    pub(super) fn put(&mut self, id: String, fingerprint: Fingerprint, answer: String) {
        self.forget(&id);
        if self.recent.len() == DEDUP_CAPACITY {
            self.recent.pop_front();
        }
        self.recent.push_back(Remembered {
            id: id.into_boxed_str(),
            fingerprint,
            answer: answer.into_boxed_str(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fp(n: i64) -> Fingerprint {
        Fingerprint::of("Pickup", &json!({ "code": n }))
    }

    #[test]
    fn a_retry_gets_the_same_answer_and_a_reused_id_does_not() {
        let mut d = Dedup::default();
        d.put("1".into(), fp(1), "answer-a".into());
        assert_eq!(d.get("1", &fp(1)).as_deref(), Some("answer-a"));
        // Same id, other content (a device that rebooted and counts from 1 again): not a retry.
        assert_eq!(d.get("1", &fp(2)), None);
        assert_eq!(d.get("2", &fp(1)), None);
    }

    #[test]
    fn a_repeated_id_keeps_one_entry_and_the_oldest_ids_are_forgotten() {
        let mut d = Dedup::default();
        d.put("1".into(), fp(1), "first".into());
        d.put("1".into(), fp(2), "second".into());
        assert_eq!(d.get("1", &fp(2)).as_deref(), Some("second"));
        assert_eq!(d.get("1", &fp(1)), None);
        assert_eq!(d.recent.len(), 1);
        for i in 2..=DEDUP_CAPACITY + 1 {
            d.put(i.to_string(), fp(0), format!("a{i}"));
        }
        // Capacity reached by ids 2..=CAPACITY+1: id 1 (the oldest) went, the rest stay.
        assert_eq!(d.get("1", &fp(2)), None);
        assert_eq!(d.get("2", &fp(0)).as_deref(), Some("a2"));
        let last = (DEDUP_CAPACITY + 1).to_string();
        assert_eq!(d.get(&last, &fp(0)), Some(format!("a{last}")));
        assert_eq!(d.recent.len(), DEDUP_CAPACITY);
        d.forget("2");
        assert_eq!(d.get("2", &fp(0)), None);
        assert_eq!(d.recent.len(), DEDUP_CAPACITY - 1);
    }
}
