//! The fleet's side of lease mode: what a lease carries of each backend, and the Worker's local view built from it (its rotation, its ejections).

use serde::{Deserialize, Serialize};

use super::Fleet;
use crate::policy::control::config::{BackendState, ServiceConfig};
use crate::policy::health::breaker::BreakerState;

/// One backend as a lease carries it, in the config's backend order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LeasedBackend {
    /// Takes new traffic (healthy, breaker closed). Enabled/draining/disabled are in the config.
    pub up: bool,
    /// Round-robin weight now (scaled, slow start and score weighting applied; 0: below the
    /// score floor, see `health::score`).
    pub weight: u32,
    /// Not yet seen answering (see `BackendRecord::unproven`): the Worker keeps the first
    /// attempt of a body it cannot replay off it, as the object does.
    #[serde(default)]
    pub unproven: bool,
}

impl Fleet {
    /// What a lease carries of each backend, in backend order: whether it takes new traffic
    /// (healthy, breaker closed; enabled/draining/disabled travel in the config), its
    /// round-robin weight now, and whether it is unproven. A backend whose breaker is not closed is never in a lease.
    pub fn lease_backends(&self, now_ms: u64) -> Vec<LeasedBackend> {
        let weights = self.effective_weights(now_ms);
        (0..self.backends.len())
            .map(|i| LeasedBackend {
                up: self.backends[i].health.healthy
                    && self.backends[i].breaker.state == BreakerState::Closed,
                weight: weights[i],
                unproven: self.backends[i].unproven,
            })
            .collect()
    }

    /// How long until some breaker that is not closed may take its half-open trial (0: now).
    /// Only the object admits trials, so a Worker under a lease asks it from then on.
    pub fn trial_in_ms(&self, now_ms: u64) -> Option<u64> {
        let params = self.breaker_params();
        (0..self.backends.len())
            .filter(|&i| {
                self.states[i] != BackendState::Disabled && self.backends[i].health.healthy
            })
            .filter_map(|i| self.backends[i].breaker.trial_in_ms(now_ms, &params))
            .min()
    }

    /// A Worker's local view under a lease: the config, with each backend up or down as the
    /// object saw it and its weight as leased. Every breaker is closed here: a backend whose
    /// breaker was not closed is down, so this fleet never hands out a trial.
    pub fn from_lease(
        cfg: ServiceConfig,
        version: u64,
        leased: &[LeasedBackend],
        secret: &[u8],
        now_ms: u64,
    ) -> Result<Fleet, String> {
        let mut fleet = Fleet::new(cfg, version, &[], secret, now_ms);
        if leased.len() != fleet.backends.len() {
            return Err(format!(
                "lease lists {} backends, its config {}",
                leased.len(),
                fleet.backends.len()
            ));
        }
        for (b, l) in fleet.backends.iter_mut().zip(leased) {
            b.health.healthy = l.up;
            b.unproven = l.unproven;
        }
        fleet.leased_weights = Some(leased.iter().map(|l| l.weight).collect());
        Ok(fleet)
    }

    /// The key that signs affinity pins (a lease carries it to the Worker).
    pub fn secret(&self) -> &[u8] {
        &self.affinity_secret
    }

    /// Takes a backend out of this (leased) view: it failed here, so it gets no more of this
    /// Worker's traffic until a lease says otherwise. False when no backend has that URL.
    pub fn eject(&mut self, url: &str) -> bool {
        self.set_up(url, false)
    }

    /// Sets whether a backend of this (leased) view takes new traffic; false when no backend has that URL.
    pub fn set_up(&mut self, url: &str, up: bool) -> bool {
        match self.index_of(url) {
            Some(i) => {
                self.backends[i].health.healthy = up;
                true
            }
            None => false,
        }
    }

    /// Starts each group's round robin `offset` picks in, so Workers that got their leases at
    /// the same moment do not all send their first requests to the same backend.
    pub fn spread(&mut self, offset: u64) {
        let all = self.effective_weights(0);
        for g in 0..self.groups.len() {
            let n = self.groups[g].len() as u64;
            let weights: Vec<u32> = self.groups[g].iter().map(|&i| all[i]).collect();
            for _ in 0..offset.checked_rem(n).unwrap_or(0) {
                self.selectors[g].pick(&weights, |_| true);
            }
        }
    }

    /// Keeps the round-robin position of the view this one replaces when both have the same
    /// backends in the same groups, so a refreshed lease continues the rotation.
    pub fn adopt_rotation(&mut self, old: &Fleet) {
        let same = self.groups == old.groups
            && self.backends.len() == old.backends.len()
            && self
                .backends
                .iter()
                .zip(&old.backends)
                .all(|(a, b)| a.url == b.url);
        if same {
            self.selectors = old.selectors.clone();
        }
    }
}
