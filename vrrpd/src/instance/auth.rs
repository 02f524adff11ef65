//! The receive side of authenticated adverts (`auth_key_file`), between `rx::validate`
//! and the FSM: with a key, an advert reaches the FSM only if its trailer verifies and its
//! sequence is fresh. Refusals are counted under `discards` (`auth_missing`,
//! `auth_malformed`, `auth_bad_tag`, `auth_replay`) and logged as warnings, rate-limited.
//!
//! The trailer is split off *before* `rx::validate` (which must see the VRRP message alone)
//! and checked *after* it, so that adverts which are not for us (another VRID on the
//! segment, our own looped back) are told apart as before and never count as auth failures.

use shared::wire::auth;
use tracing::warn;

use super::Driver;
use crate::net::socket::Received;

impl Driver {
    /// With a key: the VRRP message and what follows it. Without: the payload as is (a
    /// trailer from a keyed sender is then a `length` discard, as it is for any receiver
    /// that doesn't know it).
    pub(super) fn split_trailer<'p>(&self, payload: &'p [u8]) -> (&'p [u8], &'p [u8]) {
        if self.auth.is_some() {
            auth::split(payload)
        } else {
            (payload, &[])
        }
    }

    /// Whether the advert `vrrp` (already valid for this instance) may reach the FSM:
    /// always without a key; with one, only if `trailer` verifies and is not a replay.
    pub(super) fn authenticate(&mut self, r: &Received, vrrp: &[u8], trailer: &[u8]) -> bool {
        let Some(authenticator) = self.auth.as_mut() else {
            return true;
        };
        let Err(rejection) = authenticator.verify(r.src, r.dst, vrrp, trailer) else {
            return true;
        };
        let label = rejection.as_str();
        let seen = self.counters.discards.entry(label.to_string()).or_default();
        *seen += 1;
        // The first few of each reason, then every 100th: a forger can't flood the log.
        if *seen <= 3 || seen.is_multiple_of(100) {
            warn!(
                reason = label,
                src = %r.src,
                total = *seen,
                "advert refused by authentication: {rejection}"
            );
        }
        false
    }
}
