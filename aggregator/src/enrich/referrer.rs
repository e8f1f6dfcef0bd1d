//! Referrer enrichment: traffic source and marketing channel.

use url::Url;

/// Source of visits without a referrer (or from the site itself).
pub const DIRECT: &str = "Direct / None";

/// What kind of site sent a visit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// No referrer, or the site itself.
    Direct,
    /// A known search engine.
    Search,
    /// A known social network.
    Social,
    /// Any other site, or a campaign source Beacon does not know.
    Referral,
}

/// Where a visit came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// Display name: "Google", "news.ycombinator.com", a UTM source, or [`DIRECT`].
    pub name: String,
    /// Its kind.
    pub kind: SourceKind,
}

/// Known sites: (name, kind, registrable labels, exact hosts).
const KNOWN: &[(&str, SourceKind, &[&str], &[&str])] = &[
    ("Google", SourceKind::Search, &["google"], &[]),
    ("Bing", SourceKind::Search, &["bing"], &[]),
    ("DuckDuckGo", SourceKind::Search, &["duckduckgo"], &[]),
    ("Yahoo!", SourceKind::Search, &["yahoo"], &[]),
    ("Yandex", SourceKind::Search, &["yandex"], &["ya.ru"]),
    ("Baidu", SourceKind::Search, &["baidu"], &[]),
    ("Ecosia", SourceKind::Search, &["ecosia"], &[]),
    ("Brave", SourceKind::Search, &[], &["search.brave.com"]),
    (
        "Facebook",
        SourceKind::Social,
        &["facebook"],
        &["fb.com", "fb.me"],
    ),
    (
        "Twitter",
        SourceKind::Social,
        &["twitter"],
        &["x.com", "t.co"],
    ),
    ("LinkedIn", SourceKind::Social, &["linkedin"], &["lnkd.in"]),
    ("Reddit", SourceKind::Social, &["reddit"], &["redd.it"]),
    ("Instagram", SourceKind::Social, &["instagram"], &[]),
    ("YouTube", SourceKind::Social, &["youtube"], &["youtu.be"]),
    ("Pinterest", SourceKind::Social, &["pinterest"], &["pin.it"]),
    ("TikTok", SourceKind::Social, &["tiktok"], &[]),
];

/// UTM source spellings of known sites, lowercase.
const UTM_ALIASES: &[(&str, &str)] = &[
    ("fb", "Facebook"),
    ("x", "Twitter"),
    ("ig", "Instagram"),
    ("yt", "YouTube"),
];

/// The source of a visit that landed on `page_host` from `referrer`, overridden by `utm_source`.
pub fn source(referrer: &str, page_host: &str, utm_source: Option<&str>) -> Source {
    if let Some(utm) = utm_source {
        return utm_named(utm);
    }
    let Some((host, _)) = external(referrer, page_host) else {
        return Source {
            name: DIRECT.to_owned(),
            kind: SourceKind::Direct,
        };
    };
    let host = host.as_str();
    match known_host(host) {
        Some((name, kind)) => Source {
            name: name.to_owned(),
            kind,
        },
        None => Source {
            name: host.to_owned(),
            kind: SourceKind::Referral,
        },
    }
}

/// The referrer of a visit that landed on `page_host`, as its host without `www.` and its path
/// without query or fragment ("news.ycombinator.com/item", "google.com"); [`DIRECT`] without
/// one, or from the site itself.
pub fn referrer_url(referrer: &str, page_host: &str) -> String {
    match external(referrer, page_host) {
        None => DIRECT.to_owned(),
        Some((host, url)) => match url.path() {
            "" | "/" => host,
            path => format!("{host}{}", path.trim_end_matches('/')),
        },
    }
}

/// The referrer's host (lowercase, without `www.`) and URL, unless there is none or it is the
/// site itself (`page_host`).
fn external(referrer: &str, page_host: &str) -> Option<(String, Url)> {
    let url = Url::parse(referrer.trim()).ok()?;
    let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
    let host = strip_www(&host).to_owned();
    (!host.is_empty() && host != strip_www(page_host)).then_some((host, url))
}

/// The marketing channel of a visit from `source` with campaign medium `utm_medium`.
pub fn channel(source: &Source, utm_medium: Option<&str>) -> &'static str {
    let medium = utm_medium.map(str::to_ascii_lowercase).unwrap_or_default();
    let medium = medium.as_str();
    match medium {
        "paidsocial" | "paid_social" | "paid-social" | "social_paid" | "social-paid" => {
            "Paid Social"
        }
        "cpc" | "ppc" | "paid" | "paidsearch" | "paid_search" | "paid-search"
            if source.kind == SourceKind::Social =>
        {
            "Paid Social"
        }
        "cpc" | "ppc" | "paid" | "paidsearch" | "paid_search" | "paid-search" => "Paid Search",
        "email" | "e-mail" | "e_mail" | "newsletter" => "Email",
        _ => match source.kind {
            SourceKind::Search => "Organic Search",
            SourceKind::Social => "Organic Social",
            SourceKind::Referral if medium == "organic" => "Organic Search",
            SourceKind::Referral if medium == "social" => "Organic Social",
            SourceKind::Referral => "Referral",
            SourceKind::Direct => "Direct",
        },
    }
}

/// A UTM source, named like the site when Beacon knows it ("google" -> "Google").
fn utm_named(utm: &str) -> Source {
    let lower = utm.to_ascii_lowercase();
    let alias = UTM_ALIASES
        .iter()
        .find(|(alias, _)| *alias == lower)
        .map(|(_, name)| *name);
    let known = KNOWN.iter().find(|(name, _, labels, _)| {
        Some(*name) == alias
            || name.eq_ignore_ascii_case(&lower)
            || labels.contains(&lower.as_str())
    });
    match known {
        Some((name, kind, _, _)) => Source {
            name: (*name).to_owned(),
            kind: *kind,
        },
        None if is_host(&lower) => source_of_host(&lower),
        None => Source {
            name: utm.to_owned(),
            kind: SourceKind::Referral,
        },
    }
}

/// A UTM source that is a host name ("news.example.com").
fn is_host(value: &str) -> bool {
    value.contains('.') && !value.contains(char::is_whitespace)
}

fn source_of_host(host: &str) -> Source {
    let host = strip_www(host);
    match known_host(host) {
        Some((name, kind)) => Source {
            name: name.to_owned(),
            kind,
        },
        None => Source {
            name: host.to_owned(),
            kind: SourceKind::Referral,
        },
    }
}

fn strip_www(host: &str) -> &str {
    host.strip_prefix("www.").unwrap_or(host)
}

/// The known site a host belongs to.
fn known_host(host: &str) -> Option<(&'static str, SourceKind)> {
    KNOWN
        .iter()
        .find(|(_, _, labels, exact)| {
            exact.iter().any(|e| is_within(host, e))
                || labels.iter().any(|label| has_site_label(host, label))
        })
        .map(|(name, kind, _, _)| (*name, *kind))
}

/// Whether `host` is `domain` or one of its subdomains.
fn is_within(host: &str, domain: &str) -> bool {
    host.strip_suffix(domain)
        .is_some_and(|rest| rest.is_empty() || rest.ends_with('.'))
}

/// Whether `host` is `label` under a public suffix: "google.com", "news.google.co.uk", not
/// "google.example.com".
fn has_site_label(host: &str, label: &str) -> bool {
    let parts: Vec<&str> = host.split('.').collect();
    parts.iter().enumerate().any(|(i, part)| {
        let suffix = &parts[i + 1..];
        *part == label
            && (1..=2).contains(&suffix.len())
            && suffix.iter().all(|s| s.len() <= 3 && !s.is_empty())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(referrer: &str) -> (String, SourceKind) {
        let s = source(referrer, "shop.example.com", None);
        (s.name, s.kind)
    }

    #[test]
    fn direct() {
        assert_eq!(name(""), (DIRECT.to_owned(), SourceKind::Direct));
        assert_eq!(name("not a url"), (DIRECT.to_owned(), SourceKind::Direct));
        assert_eq!(
            name("https://shop.example.com/cart"),
            (DIRECT.to_owned(), SourceKind::Direct)
        );
        assert_eq!(
            source("https://www.example.com/", "example.com", None).kind,
            SourceKind::Direct
        );
    }

    #[test]
    fn search_engines() {
        assert_eq!(
            name("https://www.google.com/"),
            ("Google".to_owned(), SourceKind::Search)
        );
        assert_eq!(
            name("https://www.google.co.uk/search?q=x"),
            ("Google".to_owned(), SourceKind::Search)
        );
        assert_eq!(
            name("https://www.bing.com/"),
            ("Bing".to_owned(), SourceKind::Search)
        );
        assert_eq!(
            name("https://duckduckgo.com/"),
            ("DuckDuckGo".to_owned(), SourceKind::Search)
        );
        assert_eq!(
            name("https://search.yahoo.com/"),
            ("Yahoo!".to_owned(), SourceKind::Search)
        );
        assert_eq!(
            name("https://yandex.ru/"),
            ("Yandex".to_owned(), SourceKind::Search)
        );
        assert_eq!(
            name("https://www.baidu.com/"),
            ("Baidu".to_owned(), SourceKind::Search)
        );
        assert_eq!(
            name("https://www.ecosia.org/"),
            ("Ecosia".to_owned(), SourceKind::Search)
        );
        assert_eq!(
            name("https://search.brave.com/"),
            ("Brave".to_owned(), SourceKind::Search)
        );
    }

    #[test]
    fn social_networks() {
        assert_eq!(
            name("https://l.facebook.com/l.php"),
            ("Facebook".to_owned(), SourceKind::Social)
        );
        assert_eq!(
            name("https://t.co/abc"),
            ("Twitter".to_owned(), SourceKind::Social)
        );
        assert_eq!(
            name("https://x.com/someone"),
            ("Twitter".to_owned(), SourceKind::Social)
        );
        assert_eq!(
            name("https://www.linkedin.com/"),
            ("LinkedIn".to_owned(), SourceKind::Social)
        );
        assert_eq!(
            name("https://old.reddit.com/r/rust"),
            ("Reddit".to_owned(), SourceKind::Social)
        );
        assert_eq!(
            name("https://m.youtube.com/"),
            ("YouTube".to_owned(), SourceKind::Social)
        );
        assert_eq!(
            name("https://www.tiktok.com/"),
            ("TikTok".to_owned(), SourceKind::Social)
        );
    }

    #[test]
    fn other_sites_are_referrals_by_host() {
        assert_eq!(
            name("https://www.news.ycombinator.com/item"),
            ("news.ycombinator.com".to_owned(), SourceKind::Referral)
        );
        assert_eq!(
            name("https://google.example.com/"),
            ("google.example.com".to_owned(), SourceKind::Referral)
        );
        assert_eq!(
            name("https://max.com/"),
            ("max.com".to_owned(), SourceKind::Referral)
        );
    }

    #[test]
    fn referrer_urls_drop_scheme_www_query_and_trailing_slash() {
        let url = |r: &str| referrer_url(r, "shop.example.com");
        assert_eq!(url("https://www.google.com/"), "google.com");
        assert_eq!(
            url("https://news.ycombinator.com/item?id=1"),
            "news.ycombinator.com/item"
        );
        assert_eq!(url("https://t.co/abc/#x"), "t.co/abc");
        assert_eq!(url(""), DIRECT);
        assert_eq!(url("https://www.shop.example.com/cart"), DIRECT);
        assert_eq!(url("not a url"), DIRECT);
    }

    #[test]
    fn utm_source_wins() {
        let s = source(
            "https://www.google.com/",
            "shop.example.com",
            Some("newsletter"),
        );
        assert_eq!(
            (s.name.as_str(), s.kind),
            ("newsletter", SourceKind::Referral)
        );
        let s = source("", "shop.example.com", Some("google"));
        assert_eq!((s.name.as_str(), s.kind), ("Google", SourceKind::Search));
        let s = source("", "shop.example.com", Some("fb"));
        assert_eq!((s.name.as_str(), s.kind), ("Facebook", SourceKind::Social));
    }

    #[test]
    fn channels() {
        let google = source("https://www.google.com/", "a.com", None);
        let facebook = source("https://facebook.com/", "a.com", None);
        let blog = source("https://blog.example.org/", "a.com", None);
        let direct = source("", "a.com", None);
        assert_eq!(channel(&google, None), "Organic Search");
        assert_eq!(channel(&google, Some("CPC")), "Paid Search");
        assert_eq!(channel(&facebook, None), "Organic Social");
        assert_eq!(channel(&facebook, Some("cpc")), "Paid Social");
        assert_eq!(channel(&blog, Some("paid_social")), "Paid Social");
        assert_eq!(channel(&blog, Some("email")), "Email");
        assert_eq!(channel(&blog, None), "Referral");
        assert_eq!(channel(&direct, None), "Direct");
    }
}
