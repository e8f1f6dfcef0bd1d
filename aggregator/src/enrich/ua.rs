//! User-agent enrichment: browser, operating system, device class and bot detection.

use std::sync::LazyLock;

/// The woothee parser (stateless; its patterns are compiled once per process).
static PARSER: LazyLock<woothee::parser::Parser> = LazyLock::new(woothee::parser::Parser::new);

/// The isbot pattern list, compiled once per process.
static BOTS: LazyLock<isbot::Bots> = LazyLock::new(isbot::Bots::default);

/// Value used when a field is unknown.
pub const UNKNOWN: &str = "(unknown)";

/// What a user agent says about the visitor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserAgent {
    /// Browser name, for example "Chrome".
    pub browser: String,
    /// Operating system family, for example "Windows" or "iOS".
    pub os: String,
    /// "Desktop", "Mobile", "Tablet" or "Other".
    pub device: &'static str,
    /// Whether the agent is a crawler or other automated client.
    pub bot: bool,
}

/// Parses a User-Agent header. Empty agents are bots: every browser sends one.
pub fn parse(agent: &str) -> UserAgent {
    let agent = agent.trim();
    if agent.is_empty() {
        return UserAgent {
            browser: UNKNOWN.to_owned(),
            os: UNKNOWN.to_owned(),
            device: "Other",
            bot: true,
        };
    }
    let parsed = PARSER.parse(agent);
    let (name, category, os) = parsed
        .as_ref()
        .map_or(("", "", ""), |r| (r.name, r.category, r.os));
    UserAgent {
        browser: known(name).to_owned(),
        os: os_family(os).to_owned(),
        device: device(category, os, agent),
        bot: category == "crawler" || BOTS.is_bot(agent),
    }
}

/// `value`, or [`UNKNOWN`] when woothee could not tell.
fn known(value: &str) -> &str {
    if value.is_empty() || value == woothee::woothee::VALUE_UNKNOWN {
        UNKNOWN
    } else {
        value
    }
}

/// Groups woothee's operating-system versions into families.
fn os_family(os: &str) -> &str {
    match os {
        "iPhone" | "iPad" | "iPod" | "iOS" => "iOS",
        "Mac OSX" | "Mac OS Classic" => "macOS",
        "Windows Phone OS" => "Windows Phone",
        "Windows CE" => "Windows CE",
        _ if os.starts_with("Windows") => "Windows",
        _ => known(os),
    }
}

/// The device class from woothee's category, refined for tablets.
fn device(category: &str, os: &str, agent: &str) -> &'static str {
    match category {
        "pc" => "Desktop",
        "smartphone" | "mobilephone" if is_tablet(os, agent) => "Tablet",
        "smartphone" | "mobilephone" => "Mobile",
        _ => "Other",
    }
}

/// iPads, Android devices without "Mobile" in their agent, and agents that say "Tablet".
fn is_tablet(os: &str, agent: &str) -> bool {
    os == "iPad"
        || (agent.contains("Android") && !agent.contains("Mobile"))
        || agent.contains("Tablet")
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHROME_WINDOWS: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";
    const SAFARI_IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.2 Mobile/15E148 Safari/604.1";
    const SAFARI_IPAD: &str = "Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/16.6 Mobile/15E148 Safari/604.1";
    const ANDROID_TABLET: &str = "Mozilla/5.0 (Linux; Android 13; SM-X700) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";
    const ANDROID_PHONE: &str = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Mobile Safari/537.36";
    const FIREFOX_MAC: &str =
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10.15; rv:121.0) Gecko/20100101 Firefox/121.0";

    #[test]
    fn desktop_chrome_on_windows() {
        let ua = parse(CHROME_WINDOWS);
        assert_eq!(
            (ua.browser.as_str(), ua.os.as_str(), ua.device, ua.bot),
            ("Chrome", "Windows", "Desktop", false)
        );
    }

    #[test]
    fn desktop_firefox_on_mac() {
        let ua = parse(FIREFOX_MAC);
        assert_eq!(
            (ua.browser.as_str(), ua.os.as_str(), ua.device),
            ("Firefox", "macOS", "Desktop")
        );
    }

    #[test]
    fn phones_and_tablets() {
        assert_eq!(parse(SAFARI_IPHONE).device, "Mobile");
        assert_eq!(parse(SAFARI_IPHONE).os, "iOS");
        assert_eq!(parse(SAFARI_IPAD).device, "Tablet");
        assert_eq!(parse(ANDROID_TABLET).device, "Tablet");
        assert_eq!(parse(ANDROID_PHONE).device, "Mobile");
        assert_eq!(parse(ANDROID_PHONE).os, "Android");
    }

    #[test]
    fn bots() {
        assert!(
            parse("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)").bot
        );
        assert!(parse("curl/8.4.0").bot);
        assert!(parse("").bot);
        assert!(parse("   ").bot);
        assert!(!parse(CHROME_WINDOWS).bot);
        assert!(!parse(SAFARI_IPHONE).bot);
    }

    #[test]
    fn unknown_agents_are_other() {
        let ua = parse("SomethingNobodyKnows");
        assert_eq!(
            (ua.browser.as_str(), ua.os.as_str(), ua.device),
            (UNKNOWN, UNKNOWN, "Other")
        );
    }
}
