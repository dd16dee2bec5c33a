//! Admission: which records of the stream become events of the lake and of the live state. One
//! function, used by the stage and by every offline evaluation that replays a stream as the stage
//! would, so the two cannot drift apart.

use shoplake_events::{Limits, Rejection, ValidEvent, decode};

use crate::enrich::bots::BotCache;

/// What became of one record.
// Returned by value once per record and matched at once, never stored: boxing the event would cost
// an allocation per record on the stage's hottest path for no memory saved.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Admission<'a> {
    /// Not an event of the contract: a bad row with this reason.
    Rejected(Rejection),
    /// An event whose id was admitted before.
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

/// Decodes and validates `payload` (arrived at `arrival_micros`), asks `first_sighting` whether
/// its id (with its received time) is new, and tells bots apart.
pub fn admit<'a>(
    payload: &'a [u8],
    arrival_micros: i64,
    limits: &Limits,
    bots: &mut BotCache,
    first_sighting: impl FnOnce(u128, i64) -> bool,
) -> Admission<'a> {
    let event = match decode(payload, arrival_micros, limits) {
        Ok(event) => event,
        Err(rejection) => return Admission::Rejected(rejection),
    };
    // decode checked that event_id is a UUID.
    let id = uuid::Uuid::try_parse(event.event_id())
        .map(|u| u.as_u128())
        .unwrap_or_default();
    if !first_sighting(id, event.received_at) {
        return Admission::Duplicate;
    }
    let ctx = event.event.context.as_ref();
    let bot = bots.is_bot(
        ctx.and_then(|c| c.user_agent.as_deref()),
        ctx.and_then(|c| c.device_type.as_deref()),
    );
    Admission::Admitted { event, id, bot }
}
