//! Probing from several regions: the region codes, each region's view of a backend, the quorum that marks it down, and which probe region is nearest a client.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A Durable Object location hint: where a region's prober (and optionally a hostname's object) runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum Region {
    /// Western North America.
    Wnam,
    /// Eastern North America.
    Enam,
    /// South America.
    Sam,
    /// Western Europe.
    Weur,
    /// Eastern Europe.
    Eeur,
    /// Asia-Pacific.
    Apac,
    /// Oceania.
    Oc,
    /// Africa.
    Afr,
    /// Middle East.
    Me,
}

impl Region {
    pub const ALL: [Region; 9] = [
        Region::Wnam,
        Region::Enam,
        Region::Sam,
        Region::Weur,
        Region::Eeur,
        Region::Apac,
        Region::Oc,
        Region::Afr,
        Region::Me,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Region::Wnam => "wnam",
            Region::Enam => "enam",
            Region::Sam => "sam",
            Region::Weur => "weur",
            Region::Eeur => "eeur",
            Region::Apac => "apac",
            Region::Oc => "oc",
            Region::Afr => "afr",
            Region::Me => "me",
        }
    }

    pub fn parse(s: &str) -> Option<Region> {
        Region::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// The other regions from nearest to farthest (a coarse, documented ordering by geography),
    /// used when a client's own region has no prober.
    fn neighbours(self) -> [Region; 8] {
        use Region::*;
        match self {
            Wnam => [Enam, Sam, Apac, Oc, Weur, Eeur, Me, Afr],
            Enam => [Wnam, Weur, Sam, Eeur, Afr, Me, Apac, Oc],
            Sam => [Enam, Wnam, Afr, Weur, Eeur, Me, Oc, Apac],
            Weur => [Eeur, Enam, Afr, Me, Wnam, Sam, Apac, Oc],
            Eeur => [Weur, Me, Afr, Apac, Enam, Wnam, Sam, Oc],
            Apac => [Oc, Me, Eeur, Wnam, Weur, Afr, Enam, Sam],
            Oc => [Apac, Wnam, Me, Sam, Enam, Eeur, Weur, Afr],
            Afr => [Weur, Me, Eeur, Sam, Enam, Apac, Wnam, Oc],
            Me => [Eeur, Afr, Weur, Apac, Oc, Enam, Wnam, Sam],
        }
    }
}

/// Countries of Eastern Europe (the rest of Europe is `weur`).
const EEUR: &[&str] = &[
    "BY", "BG", "CZ", "EE", "HU", "LT", "LV", "MD", "PL", "RO", "RU", "SK", "UA", "RS", "BA", "ME",
    "MK", "AL", "XK", "GR", "HR", "SI",
];
/// Countries of the Middle East (Asia's rest is `apac`).
const ME: &[&str] = &[
    "AE", "BH", "IL", "IQ", "IR", "JO", "KW", "LB", "OM", "PS", "QA", "SA", "SY", "TR", "YE", "CY",
    "EG",
];
/// Countries of Western North America: only Canada's and the USA's split matters, and a country
/// code cannot tell a coast; western Mexico and the Pacific states are too fine to map from a
/// country, so North America maps to `enam` except these.
const WNAM: &[&str] = &["MX"];

/// The region a client is in, from its country (ISO 3166 alpha-2) and continent (Cloudflare's
/// two-letter codes: AF, AN, AS, EU, NA, OC, SA). None: neither is known.
pub fn client_region(country: Option<&str>, continent: Option<&str>) -> Option<Region> {
    let country = country.map(|c| c.trim().to_ascii_uppercase());
    if let Some(c) = country.as_deref() {
        if EEUR.contains(&c) {
            return Some(Region::Eeur);
        }
        if ME.contains(&c) {
            return Some(Region::Me);
        }
        if WNAM.contains(&c) {
            return Some(Region::Wnam);
        }
    }
    match continent.map(|c| c.trim().to_ascii_uppercase()).as_deref() {
        Some("NA") => Some(Region::Enam),
        Some("SA") => Some(Region::Sam),
        Some("EU") => Some(Region::Weur),
        Some("AS") => Some(Region::Apac),
        Some("OC") | Some("AN") => Some(Region::Oc),
        Some("AF") => Some(Region::Afr),
        _ => None,
    }
}

/// The probe region nearest `client` among `probed` (in the client's own region when there is a
/// prober there, else its nearest neighbour with one). None: no client region or no regions.
pub fn nearest(client: Option<Region>, probed: &[Region]) -> Option<Region> {
    let client = client?;
    if probed.contains(&client) {
        return Some(client);
    }
    client.neighbours().into_iter().find(|r| probed.contains(r))
}

/// The quorum in effect: the configured one, or a majority of the regions.
pub fn quorum(configured: Option<u32>, regions: usize) -> usize {
    match configured {
        Some(q) => q as usize,
        None => regions / 2 + 1,
    }
}

/// What each region's prober last said of one backend (true: up).
pub type RegionStates = BTreeMap<Region, bool>;

/// One backend's health across regions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every region that reported sees it up.
    Up,
    /// Some regions see it down, fewer than the quorum: it stays in traffic.
    Degraded,
    /// At least `quorum` regions see it down.
    Down,
}

/// The backend's verdict from its regions' states: down when at least `quorum` regions see it
/// down, degraded when some (fewer) do. A region that has not reported yet counts as neither.
pub fn verdict(states: &RegionStates, quorum: usize) -> Verdict {
    let down = states.values().filter(|up| !**up).count();
    if down >= quorum.max(1) {
        Verdict::Down
    } else if down > 0 {
        Verdict::Degraded
    } else {
        Verdict::Up
    }
}

/// The regions that see a backend down, for the console and the status view.
pub fn down_in(states: &RegionStates) -> Vec<Region> {
    states
        .iter()
        .filter(|(_, up)| !**up)
        .map(|(r, _)| *r)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn states(list: &[(Region, bool)]) -> RegionStates {
        list.iter().copied().collect()
    }

    #[test]
    fn a_minority_degrades_a_quorum_takes_out_and_recovery_brings_back() {
        use Region::*;
        let q = quorum(None, 3);
        assert_eq!(q, 2);
        let mut s = states(&[(Wnam, true), (Weur, true), (Apac, true)]);
        assert_eq!(verdict(&s, q), Verdict::Up);
        s.insert(Apac, false);
        assert_eq!(verdict(&s, q), Verdict::Degraded);
        assert_eq!(down_in(&s), vec![Apac]);
        s.insert(Weur, false);
        assert_eq!(verdict(&s, q), Verdict::Down);
        s.insert(Weur, true);
        assert_eq!(verdict(&s, q), Verdict::Degraded);
        s.insert(Apac, true);
        assert_eq!(verdict(&s, q), Verdict::Up);
        // A configured quorum of 1: any region's failure takes it out.
        assert_eq!(
            verdict(&states(&[(Wnam, false), (Weur, true)]), 1),
            Verdict::Down
        );
        // Regions that have not reported count as neither.
        assert_eq!(verdict(&states(&[(Wnam, false)]), 2), Verdict::Degraded);
    }

    #[test]
    fn clients_map_to_regions_and_to_the_nearest_prober() {
        use Region::*;
        assert_eq!(client_region(Some("DE"), Some("EU")), Some(Weur));
        assert_eq!(client_region(Some("pl"), Some("EU")), Some(Eeur));
        assert_eq!(client_region(Some("AE"), Some("AS")), Some(Me));
        assert_eq!(client_region(Some("JP"), Some("AS")), Some(Apac));
        assert_eq!(client_region(Some("US"), Some("NA")), Some(Enam));
        assert_eq!(client_region(Some("BR"), Some("SA")), Some(Sam));
        assert_eq!(client_region(None, Some("OC")), Some(Oc));
        assert_eq!(client_region(None, None), None);
        assert_eq!(nearest(Some(Weur), &[Wnam, Weur]), Some(Weur));
        assert_eq!(nearest(Some(Eeur), &[Wnam, Weur]), Some(Weur));
        assert_eq!(nearest(Some(Oc), &[Weur, Apac]), Some(Apac));
        assert_eq!(nearest(None, &[Weur]), None);
        assert_eq!(nearest(Some(Weur), &[]), None);
        for r in Region::ALL {
            assert_eq!(Region::parse(r.as_str()), Some(r));
            let mut all: Vec<Region> = r.neighbours().to_vec();
            all.push(r);
            all.sort();
            assert_eq!(
                all,
                Region::ALL.to_vec(),
                "{r:?}'s neighbours are every other region once"
            );
        }
    }

    proptest! {
        /// More regions seeing the backend down never makes the verdict better.
        #[test]
        fn verdict_is_monotone_in_regions_down(ups in proptest::collection::vec(any::<bool>(), 1..9), flip in 0usize..9, q in 1usize..9) {
            let s: RegionStates = Region::ALL.iter().copied().zip(ups.iter().copied()).collect();
            let before = verdict(&s, q);
            let mut worse = s.clone();
            if let Some((r, _)) = s.iter().nth(flip % s.len()) {
                worse.insert(*r, false);
            }
            let rank = |v: Verdict| match v { Verdict::Up => 0, Verdict::Degraded => 1, Verdict::Down => 2 };
            prop_assert!(rank(verdict(&worse, q)) >= rank(before));
        }
    }
}
