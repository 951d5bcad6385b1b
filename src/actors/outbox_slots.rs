//! Bookkeeping shared by the outbox actors (webhooks, notifications): which rows are being
//! sent, how many reads of due rows are under way, and which rows finished while a read was
//! under way. Such a read may have started before the row's attempt was recorded and return it
//! as still due; without `settled` it would be sent a second time.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use actix::{Actor, AsyncContext, Context, SpawnHandle};

#[derive(Debug, Default)]
pub struct OutboxSlots {
    in_flight: HashSet<String>,
    reads: usize,
    settled: HashSet<String>,
}

/// A read of due rows, begun by [`OutboxSlots::begin_read`].
pub struct Read {
    /// Rows already being sent.
    pub exclude: Vec<String>,
    /// How many rows to read at most.
    pub room: usize,
}

impl OutboxSlots {
    /// Forgets everything (an actor (re)starting).
    pub fn clear(&mut self) {
        *self = Self::default();
    }

    /// Begins a read if fewer than `capacity` rows and reads are under way; each read holds a
    /// slot until [`OutboxSlots::end_read`], so concurrent reads do not over-fetch.
    pub fn begin_read(&mut self, capacity: usize) -> Option<Read> {
        let room = capacity.saturating_sub(self.in_flight.len() + self.reads);
        if room == 0 {
            return None;
        }
        self.reads += 1;
        Some(Read {
            exclude: self.in_flight.iter().cloned().collect(),
            room,
        })
    }

    /// Whether a row a read returned may be sent: not in flight, not finished meanwhile.
    pub fn is_fresh(&self, id: &str) -> bool {
        !self.in_flight.contains(id) && !self.settled.contains(id)
    }

    /// Marks a row as being sent.
    pub fn claim(&mut self, id: &str) {
        self.in_flight.insert(id.to_string());
    }

    /// Ends a read, after its rows were claimed.
    pub fn end_read(&mut self) {
        self.reads = self.reads.saturating_sub(1);
        if self.reads == 0 {
            self.settled.clear();
        }
    }

    /// A row's attempt was recorded.
    pub fn finish(&mut self, id: &str) {
        self.in_flight.remove(id);
        if self.reads > 0 {
            self.settled.insert(id.to_string());
        }
    }
}

/// The one timer an outbox actor keeps for its next pump: the earliest of a retry coming due
/// and a rate limit clearing.
#[derive(Debug, Default)]
pub struct WakeTimer(Option<(SpawnHandle, Instant)>);

impl WakeTimer {
    /// Runs `pump` after `wait`, unless a timer that fires no later is already set (a later
    /// one is replaced).
    pub fn wake_in<A, F>(&mut self, wait: Duration, ctx: &mut Context<A>, pump: F)
    where
        A: Actor<Context = Context<A>>,
        F: FnOnce(&mut A, &mut Context<A>) + 'static,
    {
        let at = Instant::now() + wait;
        if let Some((handle, set_for)) = self.0 {
            if set_for <= at {
                return;
            }
            ctx.cancel_future(handle);
        }
        self.0 = Some((ctx.run_later(wait, pump), at));
    }

    /// The timer fired (call first thing in `pump`'s closure), or the actor restarted.
    pub fn clear(&mut self) {
        self.0 = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_finished_during_a_read_is_not_sent_again_by_it() {
        let mut s = OutboxSlots::default();
        let first = s.begin_read(4).unwrap();
        assert_eq!(first.room, 4);
        s.claim("a");
        s.end_read();
        // A second read starts; "a" is recorded as delivered while it runs, then the read,
        // begun before that commit, returns "a" as due.
        let second = s.begin_read(4).unwrap();
        assert_eq!(second.exclude, vec!["a".to_string()]);
        s.finish("a");
        assert!(!s.is_fresh("a"), "stale row from a read under way");
        s.end_read();
        // A read that begins afterwards sees the database as it is: "a" may be due again (a retry).
        s.begin_read(4).unwrap();
        assert!(s.is_fresh("a"));
    }

    #[test]
    fn capacity_counts_rows_and_reads() {
        let mut s = OutboxSlots::default();
        s.claim("a");
        s.begin_read(2).unwrap();
        assert!(s.begin_read(2).is_none());
        s.end_read();
        assert!(s.begin_read(2).is_some());
    }
}
