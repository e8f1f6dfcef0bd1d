//! Page-URL enrichment: host, path and UTM parameters.

use url::Url;

/// Base for relative page URLs ("/pricing?x=1"), which carry no host.
static RELATIVE_BASE: std::sync::LazyLock<Option<Url>> =
    std::sync::LazyLock::new(|| Url::parse("http://relative.invalid/").ok());

/// What a page URL says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageUrl {
    /// Host, lowercase; empty when the URL has none.
    pub host: String,
    /// Path without query or fragment, percent-decoded when that gives UTF-8; "/" when empty.
    pub path: String,
    /// `utm_source`, when present and not blank.
    pub utm_source: Option<String>,
    /// `utm_medium`, when present and not blank.
    pub utm_medium: Option<String>,
    /// `utm_campaign`, when present and not blank.
    pub utm_campaign: Option<String>,
    /// `utm_term`, when present and not blank.
    pub utm_term: Option<String>,
    /// `utm_content`, when present and not blank.
    pub utm_content: Option<String>,
}

/// Parses a page URL. Never fails: unparsable URLs keep their text before any query as path.
pub fn parse(raw: &str) -> PageUrl {
    let raw = raw.trim();
    match Url::parse(raw) {
        Ok(url) => from_url(&url, true),
        Err(_) => match RELATIVE_BASE.as_ref().and_then(|base| base.join(raw).ok()) {
            Some(url) => from_url(&url, false),
            None => PageUrl {
                path: fallback_path(raw),
                ..PageUrl::default()
            },
        },
    }
}

fn from_url(url: &Url, absolute: bool) -> PageUrl {
    let mut page = PageUrl {
        host: if absolute {
            url.host_str().unwrap_or_default().to_ascii_lowercase()
        } else {
            String::new()
        },
        path: non_empty_path(url.path()),
        ..PageUrl::default()
    };
    for (key, value) in url.query_pairs() {
        let slot = match key.as_ref() {
            "utm_source" => &mut page.utm_source,
            "utm_medium" => &mut page.utm_medium,
            "utm_campaign" => &mut page.utm_campaign,
            "utm_term" => &mut page.utm_term,
            "utm_content" => &mut page.utm_content,
            _ => continue,
        };
        let value = value.trim();
        if slot.is_none() && !value.is_empty() {
            *slot = Some(value.to_owned());
        }
    }
    page
}

fn non_empty_path(path: &str) -> String {
    if path.is_empty() {
        return "/".to_owned();
    }
    match percent_encoding::percent_decode_str(path).decode_utf8() {
        Ok(decoded) => decoded.into_owned(),
        Err(_) => path.to_owned(),
    }
}

fn fallback_path(raw: &str) -> String {
    let end = raw.find(['?', '#']).unwrap_or(raw.len());
    non_empty_path(&raw[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_host_and_utm() {
        let page = parse(
            "https://Shop.Example.com/pricing?utm_source=newsletter&utm_medium=email&utm_campaign=spring%20sale&x=1#top",
        );
        assert_eq!(page.host, "shop.example.com");
        assert_eq!(page.path, "/pricing");
        assert_eq!(page.utm_source.as_deref(), Some("newsletter"));
        assert_eq!(page.utm_medium.as_deref(), Some("email"));
        assert_eq!(page.utm_campaign.as_deref(), Some("spring sale"));
    }

    #[test]
    fn empty_path_is_root() {
        assert_eq!(parse("https://example.com").path, "/");
        assert_eq!(parse("https://example.com?a=b").path, "/");
    }

    #[test]
    fn blank_utm_is_absent() {
        let page = parse("https://example.com/?utm_source=&utm_medium=%20");
        assert_eq!(page.utm_source, None);
        assert_eq!(page.utm_medium, None);
    }

    #[test]
    fn relative_urls_keep_their_path() {
        let page = parse("/docs/start?utm_source=x");
        assert_eq!(page.host, "");
        assert_eq!(page.path, "/docs/start");
        assert_eq!(page.utm_source.as_deref(), Some("x"));
    }

    #[test]
    fn paths_are_percent_decoded() {
        assert_eq!(parse("https://a.de/%C3%BCber/caf%C3%A9").path, "/über/café");
        assert_eq!(parse("https://a.de/über").path, "/über");
        assert_eq!(
            parse("https://a.de/app%23/pricing").path,
            "/app#/pricing",
            "a hash-routed page (the gateway moves the fragment into the path)"
        );
        assert_eq!(
            parse("https://a.de/%FF").path,
            "/%FF",
            "not UTF-8: kept encoded"
        );
    }

    #[test]
    fn garbage_never_fails() {
        let page = parse("");
        assert_eq!(page.path, "/");
    }
}
