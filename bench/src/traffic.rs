//! Realistic, reproducible traffic from a seed.
//!
//! Tenant volumes follow a Zipf law (a few large sites, a long tail of tiny ones) and tenants
//! are spread over time zones with odd offsets. Each tenant has a pool of visitors reused with
//! a Zipf-like skew, each with a stable address and browser; visitors browse in sessions of 1
//! to 10 events that land from a search engine, a social network, a campaign or directly, then
//! move between pages and sometimes trigger custom events (signups, purchases with revenue,
//! outbound clicks, downloads). About 3 % of visitors are crawlers.

mod catalog;

pub use catalog::currency_of;

use std::collections::HashMap;
use std::fmt::Write as _;

use beacon_proto::ingest::v1::{Event, PropValue, Revenue, prop_value};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};

use catalog::{
    AGENTS, AUTHORS, Cumulative, DIURNAL, FIXED_RANKS, IPV4_FIRST, IPV6_PREFIXES, OUTBOUND, PLANS,
    PRICES, Page, PageKind, SESSION_LENGTHS, SIGNUP_METHODS, SOURCES, TIME_ZONES,
};

/// Sessions end after this much inactivity.
const SESSION_TIMEOUT_MS: u64 = 30 * 60 * 1000;
/// Share of the events after the landing one that are custom events rather than pageviews.
const CUSTOM_SHARE: f64 = 0.18;
/// Zipf exponent of the page popularity.
const PAGE_EXPONENT: f64 = 1.0;
/// Zipf exponent of visitor reuse: rank 1 is the most loyal visitor.
const VISITOR_EXPONENT: f64 = 0.8;
/// Visitors in the pool of a tenant with all the traffic.
const FULL_POOL: f64 = 400_000.0;
/// Concurrent live sessions of a tenant with all the traffic.
const FULL_SLOTS: f64 = 2_000.0;

/// What traffic to generate.
#[derive(Debug, Clone)]
pub struct TrafficConfig {
    /// Seed: the same seed and calls give the same events.
    pub seed: u64,
    /// Number of tenants (at least 1 is used).
    pub tenants: usize,
    /// Zipf exponent of tenant volumes, about 1.1.
    pub zipf_exponent: f64,
}

/// A tenant of the model.
#[derive(Debug, Clone, PartialEq)]
pub struct TenantSpec {
    /// Tenant id, for example "t00042".
    pub id: String,
    /// IANA time zone.
    pub time_zone: String,
    /// Share of the live traffic, between 0 and 1; the shares add up to 1.
    pub weight: f64,
}

/// Shared, read-only vocabulary.
struct Catalog {
    pages: Vec<Page>,
    page_ranks: Ranks,
    agents: Cumulative,
    sources: Cumulative,
    lengths: Cumulative,
}

/// One visitor: a stable address and browser.
#[derive(Debug, Clone)]
struct Visitor {
    ip: String,
    ua: &'static str,
    bot: bool,
}

/// A visit in progress.
#[derive(Debug, Clone)]
struct Session {
    visitor: Visitor,
    /// Events still to come.
    remaining: u8,
    /// Whether the landing pageview was generated.
    landed: bool,
    /// Index of the current page in the catalogue.
    page: usize,
    /// URL of the current page.
    url: String,
    /// Referrer of the current page.
    referrer: String,
    /// Timestamp of the last event.
    last_ms: i64,
}

/// Per-tenant generator state.
struct Site {
    origin: String,
    host: String,
    /// The shop's currency and its units per dollar.
    currency: (&'static str, f64),
    id_prefix: String,
    next_id: u64,
    salt: u64,
    visitors: Ranks,
    page_shift: usize,
    slots: Vec<Option<Session>>,
}

/// Generates the events of many tenants.
pub struct TrafficModel {
    rng: StdRng,
    catalog: Catalog,
    specs: Vec<TenantSpec>,
    sites: Vec<Site>,
    tenant_pick: Cumulative,
}

impl TrafficModel {
    /// Builds the tenants and their state from `config`.
    pub fn new(config: TrafficConfig) -> Self {
        let mut rng = StdRng::seed_from_u64(config.seed);
        let count = config.tenants.max(1);
        let exponent = if config.zipf_exponent.is_finite() {
            config.zipf_exponent.max(0.0)
        } else {
            1.1
        };
        let raw: Vec<f64> = (1..=count).map(|k| (k as f64).powf(-exponent)).collect();
        let total: f64 = raw.iter().sum();
        let zone_shift = rng.random_range(0..TIME_ZONES.len());
        let catalog = Catalog::new(&mut rng);
        let mut specs = Vec::with_capacity(count);
        let mut sites = Vec::with_capacity(count);
        for (index, weight) in raw.iter().map(|w| w / total).enumerate() {
            let id = format!("t{index:05}");
            sites.push(Site::new(&id, config.seed, weight, &catalog, &mut rng));
            specs.push(TenantSpec {
                id,
                time_zone: TIME_ZONES[(index + zone_shift) % TIME_ZONES.len()].to_owned(),
                weight,
            });
        }
        Self {
            rng,
            catalog,
            specs,
            sites,
            tenant_pick: Cumulative::new(raw),
        }
    }

    /// The tenants, largest first.
    pub fn tenants(&self) -> &[TenantSpec] {
        &self.specs
    }

    /// The next live event: which tenant (index into [`Self::tenants`]) and the event,
    /// timestamped `now_ms`.
    pub fn next_event(&mut self, now_ms: i64) -> (usize, Event) {
        let tenant = self.tenant_pick.pick(&mut self.rng);
        let site = &mut self.sites[tenant];
        let event = site.live_event(&self.catalog, &mut self.rng, now_ms);
        (tenant, event)
    }

    /// `count` events of one tenant in sessions whose starts follow the tenant's local day,
    /// spread over `[start_ms, end_ms)` and sorted by timestamp (for loading history). An
    /// empty range puts every event at `start_ms`; an unknown tenant gets no events.
    pub fn history(
        &mut self,
        tenant: usize,
        count: usize,
        start_ms: i64,
        end_ms: i64,
    ) -> Vec<Event> {
        let (Some(site), Some(spec)) = (self.sites.get_mut(tenant), self.specs.get(tenant)) else {
            return Vec::new();
        };
        let span = end_ms.saturating_sub(start_ms).max(1);
        let offset_ms = utc_offset_ms(&spec.time_zone, start_ms.saturating_add(span / 2));
        let mut out = Vec::with_capacity(count);
        while out.len() < count {
            let mut ts = diurnal_instant(&mut self.rng, start_ms, span, offset_ms);
            let mut session = site.new_session(&self.catalog, &mut self.rng);
            while session.remaining > 0 && out.len() < count && ts - start_ms < span {
                out.push(site.event(&self.catalog, &mut self.rng, &mut session, ts));
                ts += self.rng.random_range(5_000..240_000);
            }
        }
        out.sort_by_key(|event| event.timestamp.map(|t| (t.seconds, t.nanos)));
        out
    }
}

impl Catalog {
    fn new(rng: &mut StdRng) -> Self {
        let pages = catalog::pages(rng);
        let page_ranks = Ranks::new(pages.len(), PAGE_EXPONENT);
        Self {
            pages,
            page_ranks,
            agents: Cumulative::new(AGENTS.iter().map(|a| a.weight)),
            sources: Cumulative::new(SOURCES.iter().map(|s| s.weight)),
            lengths: Cumulative::new(SESSION_LENGTHS),
        }
    }
}

/// Zipf-distributed ranks `0..n`: rank 0 is the most frequent.
struct Ranks {
    n: usize,
    /// `None` only for parameters `Zipf` refuses, which [`Ranks::new`] never passes.
    zipf: Option<Zipf<f64>>,
}

impl Ranks {
    fn new(n: usize, exponent: f64) -> Self {
        let n = n.max(1);
        let exponent = if exponent.is_finite() {
            exponent.max(0.0)
        } else {
            1.0
        };
        Self {
            n,
            zipf: Zipf::new(n as f64, exponent).ok(),
        }
    }

    fn sample(&self, rng: &mut StdRng) -> usize {
        match &self.zipf {
            Some(zipf) => (zipf.sample(rng).max(1.0) as usize - 1).min(self.n - 1),
            None => rng.random_range(0..self.n),
        }
    }
}

impl Site {
    fn new(id: &str, seed: u64, weight: f64, catalog: &Catalog, rng: &mut StdRng) -> Self {
        let pool = (weight * FULL_POOL).round().clamp(20.0, 200_000.0) as usize;
        let slots = (weight * FULL_SLOTS).round().clamp(1.0, 256.0) as usize;
        let movable = catalog.pages.len().saturating_sub(FIXED_RANKS).max(1);
        Self {
            origin: format!("https://{id}.example"),
            host: format!("{id}.example"),
            currency: catalog::currency_of(id),
            id_prefix: format!("{id}-{seed}-"),
            next_id: 0,
            salt: rng.random(),
            visitors: Ranks::new(pool, VISITOR_EXPONENT),
            page_shift: rng.random_range(0..movable),
            slots: vec![None; slots],
        }
    }

    /// The next event of a random live session, starting a new one when needed.
    fn live_event(&mut self, catalog: &Catalog, rng: &mut StdRng, now_ms: i64) -> Event {
        let slot = rng.random_range(0..self.slots.len());
        let mut session = match self.slots[slot].take() {
            Some(s) if s.remaining > 0 && now_ms.abs_diff(s.last_ms) <= SESSION_TIMEOUT_MS => s,
            _ => self.new_session(catalog, rng),
        };
        let event = self.event(catalog, rng, &mut session, now_ms);
        if session.remaining > 0 {
            self.slots[slot] = Some(session);
        }
        event
    }

    /// A new session of a returning or new visitor, on its landing page.
    fn new_session(&self, catalog: &Catalog, rng: &mut StdRng) -> Session {
        let rank = self.visitors.sample(rng) as u64;
        let visitor = self.visitor(catalog, rank);
        let (remaining, source) = if visitor.bot {
            (rng.random_range(1..=3u8), &SOURCES[0])
        } else {
            let length = catalog.lengths.pick(rng) + 1;
            (
                u8::try_from(length).unwrap_or(1),
                &SOURCES[catalog.sources.pick(rng)],
            )
        };
        let page = self.pick_page(catalog, rng);
        let mut url = self.page_url(&catalog.pages[page]);
        url.push_str(source.query);
        Session {
            visitor,
            remaining,
            landed: false,
            page,
            url,
            referrer: source.referrer.to_owned(),
            last_ms: i64::MIN,
        }
    }

    /// The visitor of rank `rank`: the same rank always gives the same address and browser.
    fn visitor(&self, catalog: &Catalog, rank: u64) -> Visitor {
        let h = mix(self.salt ^ rank.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let agent = &AGENTS[catalog.agents.at(unit(h))];
        Visitor {
            ip: ip_address(mix(h)),
            ua: agent.ua,
            bot: agent.bot,
        }
    }

    /// A page by popularity; below the fixed top pages, each tenant ranks pages differently.
    fn pick_page(&self, catalog: &Catalog, rng: &mut StdRng) -> usize {
        let count = catalog.pages.len();
        let rank = catalog.page_ranks.sample(rng);
        if rank < FIXED_RANKS || count <= FIXED_RANKS {
            rank
        } else {
            FIXED_RANKS + (rank - FIXED_RANKS + self.page_shift) % (count - FIXED_RANKS)
        }
    }

    fn page_url(&self, page: &Page) -> String {
        let mut url = String::with_capacity(self.origin.len() + page.path.len() + 80);
        url.push_str(&self.origin);
        url.push_str(&page.path);
        url
    }

    fn next_id(&mut self) -> String {
        let mut id = String::with_capacity(self.id_prefix.len() + 20);
        id.push_str(&self.id_prefix);
        let _ = write!(id, "{}", self.next_id);
        self.next_id += 1;
        id
    }

    /// The next event of `session` at `ts`: the landing pageview, a pageview of another page
    /// or a custom event on the current page.
    fn event(
        &mut self,
        catalog: &Catalog,
        rng: &mut StdRng,
        session: &mut Session,
        ts: i64,
    ) -> Event {
        let custom = session.landed && !session.visitor.bot && rng.random_bool(CUSTOM_SHARE);
        if session.landed && !custom {
            self.navigate(catalog, rng, session);
        }
        session.landed = true;
        session.remaining = session.remaining.saturating_sub(1);
        session.last_ms = ts;
        let page = &catalog.pages[session.page];
        let (name, props, revenue) = if custom {
            self.custom_event(rng, page)
        } else {
            ("pageview", pageview_props(session.page, page), None)
        };
        let mut title = String::with_capacity(page.title.len() + self.host.len() + 3);
        title.push_str(&page.title);
        title.push_str(" | ");
        title.push_str(&self.host);
        Event {
            id: self.next_id(),
            name: name.to_owned(),
            url: session.url.clone(),
            referrer: session.referrer.clone(),
            title,
            user_agent: session.visitor.ua.to_owned(),
            client_ip: session.visitor.ip.clone(),
            timestamp: Some(timestamp(ts)),
            props,
            revenue,
            engagement: None,
            visitor_id: String::new(),
            non_interactive: false,
        }
    }

    /// Moves the session to another page; the previous page becomes the referrer.
    fn navigate(&self, catalog: &Catalog, rng: &mut StdRng, session: &mut Session) {
        let mut page = self.pick_page(catalog, rng);
        if page == session.page {
            page = self.pick_page(catalog, rng);
        }
        let url = self.page_url(&catalog.pages[page]);
        session.referrer = std::mem::replace(&mut session.url, url);
        session.page = page;
    }

    fn custom_event(
        &self,
        rng: &mut StdRng,
        page: &Page,
    ) -> (&'static str, HashMap<String, PropValue>, Option<Revenue>) {
        match page.kind {
            PageKind::Conversion => ("Signup", signup_props(rng), None),
            PageKind::Product => {
                let (props, revenue) = purchase(self.currency, rng, page);
                ("Purchase", props, Some(revenue))
            }
            PageKind::Docs if rng.random_bool(0.5) => {
                let mut url = self.origin.clone();
                url.push_str("/downloads/beacon-guide.pdf");
                (
                    "File Download",
                    HashMap::from([("url".to_owned(), text(url))]),
                    None,
                )
            }
            _ => {
                let url = OUTBOUND[rng.random_range(0..OUTBOUND.len())];
                (
                    "Outbound Link: Click",
                    HashMap::from([("url".to_owned(), text(url))]),
                    None,
                )
            }
        }
    }
}

fn pageview_props(index: usize, page: &Page) -> HashMap<String, PropValue> {
    if page.kind == PageKind::Blog {
        HashMap::from([("author".to_owned(), text(AUTHORS[index % AUTHORS.len()]))])
    } else {
        HashMap::new()
    }
}

fn signup_props(rng: &mut StdRng) -> HashMap<String, PropValue> {
    let plan = PLANS[rng.random_range(0..PLANS.len())];
    let method = SIGNUP_METHODS[rng.random_range(0..SIGNUP_METHODS.len())];
    HashMap::from([
        ("plan".to_owned(), text(plan)),
        ("method".to_owned(), text(method)),
    ])
}

fn purchase(
    (currency, per_dollar): (&'static str, f64),
    rng: &mut StdRng,
    page: &Page,
) -> (HashMap<String, PropValue>, Revenue) {
    let quantity = rng.random_range(1..=3u32);
    let price = PRICES[rng.random_range(0..PRICES.len())] * f64::from(quantity);
    let amount = if per_dollar >= 50.0 {
        (price * per_dollar).round()
    } else {
        (price * per_dollar * 100.0).round() / 100.0
    };
    let product = if page.sku.is_empty() {
        "cart"
    } else {
        page.sku.as_str()
    };
    let props = HashMap::from([
        ("product".to_owned(), text(product)),
        ("quantity".to_owned(), number(f64::from(quantity))),
    ]);
    (
        props,
        Revenue {
            amount,
            currency: currency.to_owned(),
        },
    )
}

fn text(value: impl Into<String>) -> PropValue {
    PropValue {
        kind: Some(prop_value::Kind::StringValue(value.into())),
    }
}

fn number(value: f64) -> PropValue {
    PropValue {
        kind: Some(prop_value::Kind::NumberValue(value)),
    }
}

/// A public IPv4 (85 %) or IPv6 (15 %) address drawn from the bits of `h`.
fn ip_address(h: u64) -> String {
    if h % 100 < 15 {
        let prefix = IPV6_PREFIXES[((h >> 8) % IPV6_PREFIXES.len() as u64) as usize];
        format!(
            "{prefix}:{:x}:{:x}:{:x}::{:x}",
            (h >> 16) & 0xffff,
            (h >> 32) & 0xffff,
            (h >> 48) & 0xffff,
            ((h >> 8) & 0xff) + 1
        )
    } else {
        let first = IPV4_FIRST[((h >> 8) % IPV4_FIRST.len() as u64) as usize];
        format!(
            "{first}.{}.{}.{}",
            (h >> 16) & 0xff,
            (h >> 24) & 0xff,
            (h >> 32) % 254 + 1
        )
    }
}

/// SplitMix64 finaliser: a well-mixed 64-bit hash of `x`.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// `h` as a number in `[0, 1)`.
fn unit(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// The UTC offset of `time_zone` at `at_ms`, in milliseconds (0 for an unknown zone).
fn utc_offset_ms(time_zone: &str, at_ms: i64) -> i64 {
    let Ok(zone) = jiff::tz::TimeZone::get(time_zone) else {
        return 0;
    };
    jiff::Timestamp::from_millisecond(at_ms)
        .map(|ts| i64::from(zone.to_offset(ts).seconds()) * 1000)
        .unwrap_or(0)
}

/// An instant in `[start_ms, start_ms + span)` that follows the local day: busy afternoons,
/// quiet nights.
fn diurnal_instant(rng: &mut StdRng, start_ms: i64, span: i64, offset_ms: i64) -> i64 {
    loop {
        let ts = start_ms + rng.random_range(0..span);
        let hour = (ts + offset_ms).rem_euclid(86_400_000) / 3_600_000;
        if rng.random::<f64>() < DIURNAL[hour as usize] {
            return ts;
        }
    }
}

/// `ms` Unix milliseconds as a protobuf timestamp.
pub fn timestamp(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

/// Unix milliseconds of an event's timestamp, if it has one.
pub fn timestamp_ms(event: &Event) -> Option<i64> {
    event
        .timestamp
        .map(|t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000)
}

/// Whether the model made `user_agent` a bot's (a crawler or a script); `None` for an agent
/// the model never sends.
pub fn is_bot_agent(user_agent: &str) -> Option<bool> {
    AGENTS
        .iter()
        .find(|agent| agent.ua == user_agent)
        .map(|agent| agent.bot)
}

#[cfg(test)]
mod tests;
