//! The stage's clock: the time it expires its de-duplication window and sessions by.
//!
//! That time is the stream's: the latest `received_at` seen, so that a replay of last week's
//! backlog expires state as last week went by, not all at once. But the stream's time is
//! stamped by servers whose clocks can jump. Trusted as such, one jump forward (a server set a
//! year ahead, for minutes) would expire the whole window and every open session, and keep the
//! stage's time a year ahead after a restart; one jump back would freeze expiry until the
//! stamps caught up, and the window would grow to its size cap.
//!
//! So the clock takes two readings. The stream's time is believed up to 5 minutes ahead of the
//! stage's own time — the wall clock read when the stage opened, moved by the monotonic clock
//! (which no one can set) — and no further. And the clock does not freeze while time passes:
//! while the stamps are more than 5 minutes behind it (a clock set back), and while no record
//! comes at all, it moves with the monotonic clock. Otherwise it follows the stamps, and only
//! them: a replay of old records moves it as fast as their stamps, and a stage that lags behind
//! the stream does not run ahead of what it has read. Nothing moves it back.

use std::time::Instant;

/// How far ahead of the stage's own time a stamp is believed (the same bound as a payload's
/// `received_at` against its arrival: `Limits::max_received_ahead_micros`).
pub const AHEAD_MICROS: i64 = 5 * 60 * 1_000_000;

/// See the module docs.
#[derive(Debug)]
pub struct StageClock {
    /// The wall clock when the stage opened (UTC microseconds) and the monotonic instant then.
    opened_wall: i64,
    opened: Instant,
    /// The clock's time at its last reading, and the monotonic instant of that reading.
    time: i64,
    read: Instant,
    /// Whether the last stamp was more than [`BEHIND_MICROS`] behind the clock.
    behind: bool,
    /// Whether a stamp came since the last [`now`](Self::now).
    stamped: bool,
}

/// How far behind the clock a stamp may be and still count as the stream's time going on
/// (shards are read side by side, a little apart): 5 minutes.
const BEHIND_MICROS: i64 = 5 * 60 * 1_000_000;

impl StageClock {
    /// A clock that starts at `latest` (the latest `received_at` the stage's saved state holds;
    /// `i64::MIN` for none), with the wall clock read now.
    pub fn new(latest: i64) -> Self {
        Self::starting(
            latest,
            chrono::Utc::now().timestamp_micros(),
            Instant::now(),
        )
    }

    fn starting(latest: i64, wall: i64, now: Instant) -> Self {
        let mut clock = StageClock {
            opened_wall: wall,
            opened: now,
            time: i64::MIN,
            read: now,
            behind: false,
            stamped: false,
        };
        clock.observe_at(latest, now);
        clock.stamped = false;
        clock
    }

    /// The stage's own time at `now`: the wall clock at opening moved by the monotonic clock.
    fn own_time(&self, now: Instant) -> i64 {
        let elapsed = now.saturating_duration_since(self.opened).as_micros();
        self.opened_wall
            .saturating_add(i64::try_from(elapsed).unwrap_or(i64::MAX))
    }

    /// A `received_at` the stage saw.
    pub fn observe(&mut self, received_at: i64) {
        self.observe_at(received_at, Instant::now());
    }

    fn observe_at(&mut self, received_at: i64, now: Instant) {
        let believed = received_at.min(self.own_time(now).saturating_add(AHEAD_MICROS));
        self.behind = believed < self.time.saturating_sub(BEHIND_MICROS);
        self.time = if self.behind {
            self.moved(now)
        } else {
            self.time.max(believed)
        };
        self.read = now;
        self.stamped = true;
    }

    /// The time so far moved by the monotonic time since the last reading.
    fn moved(&self, now: Instant) -> i64 {
        if self.time == i64::MIN {
            return i64::MIN;
        }
        let elapsed = now.saturating_duration_since(self.read).as_micros();
        self.time
            .saturating_add(i64::try_from(elapsed).unwrap_or(i64::MAX))
    }

    /// The time to expire state by.
    pub fn now(&mut self) -> i64 {
        self.now_at(Instant::now())
    }

    fn now_at(&mut self, now: Instant) -> i64 {
        if self.behind || !self.stamped {
            self.time = self.moved(now);
        }
        self.read = now;
        self.stamped = false;
        self.time
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const MINUTE: i64 = 60_000_000;
    const WALL: i64 = 1_790_000_000_000_000;

    #[test]
    fn a_jump_forward_of_the_stamps_is_believed_only_five_minutes_ahead() {
        let t0 = Instant::now();
        let mut clock = StageClock::starting(WALL - MINUTE, WALL, t0);
        clock.observe_at(WALL + 365 * 24 * 60 * MINUTE, t0 + Duration::from_secs(1));
        let now = clock.now_at(t0 + Duration::from_secs(1));
        assert!(now <= WALL + 5 * MINUTE + 1_000_000, "{now}");
        // The stamps come back: the clock goes on from where it was, not from a year ahead.
        clock.observe_at(WALL + MINUTE, t0 + Duration::from_secs(60));
        assert!(clock.now_at(t0 + Duration::from_secs(60)) <= WALL + 6 * MINUTE);
    }

    #[test]
    fn a_jump_back_of_the_stamps_does_not_freeze_the_clock() {
        let t0 = Instant::now();
        let mut clock = StageClock::starting(WALL, WALL, t0);
        for s in 1..=600 {
            clock.observe_at(WALL - 60 * MINUTE, t0 + Duration::from_secs(s));
        }
        assert_eq!(
            clock.now_at(t0 + Duration::from_secs(600)),
            WALL + 10 * MINUTE,
            "ten minutes went by"
        );
    }

    #[test]
    fn a_backlog_replay_moves_the_clock_as_fast_as_its_stamps() {
        let t0 = Instant::now();
        let day = 24 * 60 * MINUTE;
        // Saved state from a week ago; a week of backlog read in ten seconds.
        let mut clock = StageClock::starting(WALL - 7 * day, WALL, t0);
        for s in 1..=10 {
            clock.observe_at(
                WALL - 7 * day + s * 7 * day / 10,
                t0 + Duration::from_secs(s as u64),
            );
        }
        assert_eq!(clock.now_at(t0 + Duration::from_secs(10)), WALL);
        assert_eq!(
            StageClock::starting(i64::MIN, WALL, t0).now_at(t0),
            i64::MIN
        );
    }

    #[test]
    fn a_stage_lagging_behind_the_stream_does_not_run_ahead_of_what_it_read() {
        let t0 = Instant::now();
        let mut clock = StageClock::starting(WALL - 60 * MINUTE, WALL, t0);
        // Half a minute of stamps read per minute, a reading of the clock after each.
        for m in 1..=60 {
            let at = t0 + Duration::from_secs(60 * m as u64);
            clock.observe_at(WALL - 60 * MINUTE + m * MINUTE / 2, at);
            assert_eq!(clock.now_at(at), WALL - 60 * MINUTE + m * MINUTE / 2);
        }
    }

    #[test]
    fn an_idle_stage_moves_with_the_monotonic_clock() {
        let t0 = Instant::now();
        let mut clock = StageClock::starting(WALL, WALL, t0);
        assert_eq!(
            clock.now_at(t0 + Duration::from_secs(3600)),
            WALL + 60 * MINUTE
        );
    }
}
