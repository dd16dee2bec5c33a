//! Admission: which records of the stream become events of the lake and of the live state. One
//! function, used by the stage and by every offline evaluation that replays a stream as the stage
//! would, so the two cannot drift apart.

use std::panic::{AssertUnwindSafe, catch_unwind};

use shoplake_events::{Limits, Reason, Rejection, ValidEvent, decode};

use crate::enrich::bots::BotCache;
use crate::state::{Seen, Sighting};

/// What became of one record.
// Returned by value once per record and matched at once, never stored: boxing the event would cost
// an allocation per record on the stage's hottest path for no memory saved.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Admission<'a> {
    /// Not an event of the contract: a bad row with this reason.
    Rejected(Rejection),
    /// An event whose id was admitted before with the same payload (a retry).
    Duplicate,
    /// The first event of its id. Bots are admitted to the lake (marked `is_bot`) but never feed
    /// the live state.
    Admitted {
        event: ValidEvent<'a>,
        /// The event id as a 128-bit key (decode checked that it is a UUID).
        id: u128,
        bot: bool,
    },
}

/// Runs `step`; a panic becomes [`Admission::Rejected`] with reason `internal`.
fn guarded<'a>(step: impl FnOnce() -> Admission<'a>) -> Admission<'a> {
    // The bot cache and the id sets `step` touches stay usable after a panic: at worst a cache
    // entry is missing, or the record's id counts as seen (the record is a bad row either way).
    catch_unwind(AssertUnwindSafe(step)).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".to_owned());
        Admission::Rejected(Rejection {
            reason: Reason::Internal,
            field: None,
            message: format!("the stage panicked on this record: {what}"),
            event_id: None,
            event_name: None,
        })
    })
}

/// Decodes and validates `payload` (arrived at `arrival_micros`), asks `sighting` whether its id
/// (with its received time and payload's fingerprint) is new, a retry or a conflicting copy (a
/// bad row `conflicting_duplicate`), and tells bots apart. A panic on the way becomes a
/// rejection `internal` carrying the panic's message: a record that trips a bug becomes a bad row
/// (with its bytes) and the stage goes on, instead of crashing on it at every restart from its
/// checkpoint.
pub fn admit<'a>(
    payload: &'a [u8],
    arrival_micros: i64,
    limits: &Limits,
    bots: &mut BotCache,
    sighting: impl FnOnce(u128, Seen) -> Sighting,
) -> Admission<'a> {
    guarded(|| {
        let event = match decode(payload, arrival_micros, limits) {
            Ok(event) => event,
            Err(rejection) => return Admission::Rejected(rejection),
        };
        // decode checked that event_id is a UUID.
        let id = uuid::Uuid::try_parse(event.event_id())
            .map(|u| u.as_u128())
            .unwrap_or_default();
        let seen = Seen {
            received: event.received_at,
            fingerprint: event.fingerprint(),
        };
        match sighting(id, seen) {
            Sighting::First => {}
            Sighting::Again => return Admission::Duplicate,
            Sighting::Conflict => {
                return Admission::Rejected(Rejection {
                    reason: Reason::ConflictingDuplicate,
                    field: Some("event_id".into()),
                    message: format!(
                        "event {} was received before with a different payload (name, ids, \
                         occurred_at, properties or traits differ): the first copy is the event, \
                         this one is kept here",
                        event.event_id()
                    ),
                    event_id: Some(event.event_id().to_owned()),
                    event_name: Some(event.name.as_str().to_owned()),
                });
            }
        }
        let ctx = event.event.context.as_ref();
        let bot = bots.is_bot(
            ctx.and_then(|c| c.user_agent.as_deref()),
            ctx.and_then(|c| c.device_type.as_deref()),
        );
        Admission::Admitted { event, id, bot }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_while_admitting_a_record_is_an_internal_rejection() {
        let rejected = guarded(|| {
            let ids: Vec<u8> = Vec::new();
            // An index out of bounds, as a bug in decoding might make.
            let _ = ids[usize::from(ids.is_empty())];
            Admission::Duplicate
        });
        let Admission::Rejected(r) = rejected else {
            panic!("{rejected:?}")
        };
        assert_eq!(r.reason, Reason::Internal);
        assert!(
            r.message
                .starts_with("the stage panicked on this record: index out of bounds"),
            "{}",
            r.message
        );
        // And with a formatted message.
        let Admission::Rejected(r) = guarded(|| panic!("bad {}", 42)) else {
            unreachable!()
        };
        assert!(r.message.ends_with("bad 42"), "{}", r.message);
    }

    #[test]
    fn a_record_that_does_not_panic_is_admitted_as_before() {
        let mut bots = BotCache::default();
        let got = admit(b"not json", 0, &Limits::default(), &mut bots, |_, _| {
            Sighting::First
        });
        assert!(
            matches!(got, Admission::Rejected(ref r) if r.reason == Reason::MalformedJson),
            "{got:?}"
        );
    }
}
