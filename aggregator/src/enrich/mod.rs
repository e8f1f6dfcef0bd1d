//! Enrichment: what an event's user agent, page URL and referrer say about the visit.
//!
//! Every function here is pure: the same event always gives the same result.

use std::collections::HashMap;
use std::sync::Arc;

use beacon_proto::ingest::v1::prop_value;
use beacon_proto::insights::v1::Dimension;
use beacon_proto::pipeline::v1::LoggedEvent;

use crate::cap::cap_length;

pub mod referrer;
pub mod ua;
pub mod url;

pub use self::referrer::{Source, SourceKind};
pub use self::ua::UserAgent;
pub use self::url::PageUrl;

/// Country value of visitors whose country is unknown.
pub const UNKNOWN_COUNTRY: &str = "(unknown)";

/// Parsed user agents kept by [`Enricher`]; the cache is emptied when it grows past this.
const UA_CACHE_LIMIT: usize = 10_000;

/// Enriches events, caching user-agent parses (a few thousand agents cover most traffic).
#[derive(Debug, Default)]
pub struct Enricher {
    agents: HashMap<String, Arc<UserAgent>>,
}

impl Enricher {
    /// A new enricher with an empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// The parsed user agent, from the cache when seen before.
    pub fn user_agent(&mut self, agent: &str) -> Arc<UserAgent> {
        if let Some(parsed) = self.agents.get(agent) {
            return parsed.clone();
        }
        if self.agents.len() >= UA_CACHE_LIMIT {
            self.agents.clear();
        }
        let parsed = Arc::new(ua::parse(agent));
        self.agents.insert(agent.to_owned(), parsed.clone());
        parsed
    }
}

/// The custom properties of `event` as (key, property-row value), by key: string values as
/// they are, numbers in their shortest decimal form.
pub fn properties(event: &LoggedEvent) -> Vec<(String, String)> {
    let mut props: Vec<(String, String)> = event
        .props
        .iter()
        .filter_map(|(key, value)| {
            let text = match value.kind.as_ref()? {
                prop_value::Kind::StringValue(text) => text.clone(),
                prop_value::Kind::NumberValue(number) => number.to_string(),
            };
            Some((key.clone(), property_value(key, &text)))
        })
        .collect();
    props.sort();
    props
}

/// A property row's value ([`beacon_core::property::row_value`]), cut to
/// [`crate::cap::MAX_VALUE_BYTES`].
pub fn property_value(key: &str, value: &str) -> String {
    cap_length(beacon_core::property::row_value(key, value))
}

/// Region and city value of visitors whose location is unknown.
pub const UNKNOWN_PLACE: &str = "(unknown)";

/// The session dimensions of a visit that starts with `event` under logic `version`, in a
/// fixed order; UTM dimensions only when the landing URL carries them. Region, city, referrer
/// URL, `utm_term` and `utm_content` from version 4 on. Every value is cut to
/// [`crate::cap::MAX_VALUE_BYTES`].
pub fn session_dimensions(
    event: &LoggedEvent,
    agent: &UserAgent,
    page: &PageUrl,
    version: u32,
) -> Vec<(Dimension, String)> {
    let source = referrer::source(&event.referrer, &page.host, page.utm_source.as_deref());
    let channel = referrer::channel(&source, page.utm_medium.as_deref());
    let country = if event.country.trim().is_empty() {
        UNKNOWN_COUNTRY
    } else {
        event.country.trim()
    };
    let mut dims = vec![
        (Dimension::EntryPage, page.path.clone()),
        (Dimension::Source, source.name),
        (Dimension::Channel, channel.to_owned()),
        (Dimension::Country, country.to_owned()),
        (Dimension::Device, agent.device.to_owned()),
        (Dimension::Browser, agent.browser.clone()),
        (Dimension::Os, agent.os.clone()),
    ];
    let mut utm = vec![
        (Dimension::UtmSource, &page.utm_source),
        (Dimension::UtmMedium, &page.utm_medium),
        (Dimension::UtmCampaign, &page.utm_campaign),
    ];
    if version >= 4 {
        let known = |value: &str| {
            let value = value.trim();
            if value.is_empty() {
                UNKNOWN_PLACE.to_owned()
            } else {
                value.to_owned()
            }
        };
        dims.extend([
            (Dimension::Region, known(&event.region)),
            (Dimension::City, known(&event.city)),
            (
                Dimension::Referrer,
                referrer::referrer_url(&event.referrer, &page.host),
            ),
        ]);
        utm.extend([
            (Dimension::UtmTerm, &page.utm_term),
            (Dimension::UtmContent, &page.utm_content),
        ]);
    }
    dims.extend(
        utm.into_iter()
            .filter_map(|(dim, value)| value.clone().map(|v| (dim, v))),
    );
    dims.into_iter()
        .map(|(dim, value)| (dim, cap_length(value)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";

    fn event(url: &str, referrer: &str, country: &str) -> LoggedEvent {
        LoggedEvent {
            url: url.into(),
            referrer: referrer.into(),
            country: country.into(),
            user_agent: CHROME.into(),
            ..LoggedEvent::default()
        }
    }

    fn dims(event: &LoggedEvent) -> Vec<(Dimension, String)> {
        let agent = ua::parse(&event.user_agent);
        session_dimensions(event, &agent, &url::parse(&event.url), 3)
    }

    #[test]
    fn organic_search_visit() {
        let got = dims(&event(
            "https://a.com/blog/post",
            "https://www.google.com/",
            "DE",
        ));
        let want: Vec<(Dimension, String)> = vec![
            (Dimension::EntryPage, "/blog/post".into()),
            (Dimension::Source, "Google".into()),
            (Dimension::Channel, "Organic Search".into()),
            (Dimension::Country, "DE".into()),
            (Dimension::Device, "Desktop".into()),
            (Dimension::Browser, "Chrome".into()),
            (Dimension::Os, "Windows".into()),
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn campaign_visit_has_utm_dimensions() {
        let got = dims(&event(
            "https://a.com/?utm_source=google&utm_medium=cpc&utm_campaign=brand",
            "",
            "",
        ));
        assert!(got.contains(&(Dimension::Channel, "Paid Search".into())));
        assert!(got.contains(&(Dimension::Country, UNKNOWN_COUNTRY.into())));
        assert!(got.contains(&(Dimension::UtmSource, "google".into())));
        assert!(got.contains(&(Dimension::UtmMedium, "cpc".into())));
        assert!(got.contains(&(Dimension::UtmCampaign, "brand".into())));
        assert_eq!(got.len(), 10);
    }

    #[test]
    fn version_4_adds_place_referrer_and_utm_term_and_content() {
        let mut visit = event(
            "https://a.com/?utm_source=x&utm_term=shoes&utm_content=banner",
            "https://www.google.com/search?q=shoes",
            "DE",
        );
        visit.region = "BE".into();
        let agent = ua::parse(&visit.user_agent);
        let got = session_dimensions(&visit, &agent, &url::parse(&visit.url), 4);
        for want in [
            (Dimension::Region, "BE"),
            (Dimension::City, UNKNOWN_PLACE),
            (Dimension::Referrer, "google.com/search"),
            (Dimension::UtmTerm, "shoes"),
            (Dimension::UtmContent, "banner"),
        ] {
            assert!(
                got.contains(&(want.0, want.1.into())),
                "{want:?} in {got:?}"
            );
        }
        assert!(!dims(&visit).iter().any(|(d, _)| *d == Dimension::UtmTerm));
    }

    #[test]
    fn cache_returns_the_same_parse() {
        let mut enricher = Enricher::new();
        let a = enricher.user_agent(CHROME);
        let b = enricher.user_agent(CHROME);
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(*a, ua::parse(CHROME));
    }
}
