//! The fixed vocabulary of generated traffic: time zones, pages, traffic sources, browsers,
//! addresses and the values of custom events. Everything here is built once per model.

use rand::Rng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

/// Time zones tenants are spread over, including half-hour and southern-hemisphere DST zones.
pub const TIME_ZONES: [&str; 8] = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "America/Los_Angeles",
    "Asia/Kolkata",
    "Asia/Tokyo",
    "Australia/Adelaide",
    "America/Sao_Paulo",
];

/// A user agent with its relative share of visitors and whether it is a crawler.
pub struct Agent {
    /// The `User-Agent` header.
    pub ua: &'static str,
    /// Relative weight.
    pub weight: f64,
    /// A crawler or script, not a person.
    pub bot: bool,
}

const fn agent(ua: &'static str, weight: f64, bot: bool) -> Agent {
    Agent { ua, weight, bot }
}

/// Real-world user agents; bots add up to 3 % of visitors.
pub const AGENTS: &[Agent] = &[
    agent(
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
        27.0,
        false,
    ),
    agent(
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
        9.0,
        false,
    ),
    agent(
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4.1 Safari/605.1.15",
        7.0,
        false,
    ),
    agent(
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0",
        4.0,
        false,
    ),
    agent(
        "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
        2.0,
        false,
    ),
    agent(
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.67",
        6.0,
        false,
    ),
    agent(
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4.1 Mobile/15E148 Safari/604.1",
        19.0,
        false,
    ),
    agent(
        "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.6367.82 Mobile Safari/537.36",
        8.0,
        false,
    ),
    agent(
        "Mozilla/5.0 (Linux; Android 13; SM-S911B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/24.0 Chrome/117.0.0.0 Mobile Safari/537.36",
        5.0,
        false,
    ),
    agent(
        "Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
        3.0,
        false,
    ),
    agent(
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/124.0.6367.88 Mobile/15E148 Safari/604.1",
        2.0,
        false,
    ),
    agent(
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        1.0,
        true,
    ),
    agent(
        "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
        0.6,
        true,
    ),
    agent(
        "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
        0.5,
        true,
    ),
    agent("curl/8.5.0", 0.4, true),
    agent("python-requests/2.31.0", 0.3, true),
    agent(
        "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2; +https://openai.com/gptbot)",
        0.2,
        true,
    ),
];

/// Where a visit comes from: the landing event's referrer and the query string of its URL.
pub struct Source {
    /// Referrer URL; empty for direct traffic.
    pub referrer: &'static str,
    /// Query string appended to the landing URL (campaigns); empty otherwise.
    pub query: &'static str,
    /// Relative weight.
    pub weight: f64,
}

const fn source(referrer: &'static str, query: &'static str, weight: f64) -> Source {
    Source {
        referrer,
        query,
        weight,
    }
}

/// Traffic sources of landing events.
pub const SOURCES: &[Source] = &[
    source("", "", 34.0),
    source("https://www.google.com/", "", 26.0),
    source("https://www.bing.com/", "", 4.0),
    source("https://duckduckgo.com/", "", 3.0),
    source("https://www.facebook.com/", "", 2.5),
    source("https://l.facebook.com/", "", 1.5),
    source("https://t.co/", "", 3.0),
    source("https://www.linkedin.com/", "", 2.0),
    source("https://www.reddit.com/r/programming/", "", 2.0),
    source("https://news.ycombinator.com/", "", 3.0),
    source("https://github.com/", "", 2.5),
    source("https://stackoverflow.com/questions/78412233", "", 1.5),
    source("https://dev.to/", "", 1.0),
    source(
        "https://medium.com/@ana/privacy-first-analytics-3f1c",
        "",
        1.0,
    ),
    source("https://www.producthunt.com/", "", 1.0),
    source("https://indiehackers.example.net/post/42", "", 0.5),
    source(
        "https://www.google.com/",
        "?utm_source=google&utm_medium=cpc&utm_campaign=brand_search",
        2.5,
    ),
    source(
        "",
        "?utm_source=newsletter&utm_medium=email&utm_campaign=weekly_digest",
        2.5,
    ),
    source(
        "https://www.facebook.com/",
        "?utm_source=facebook&utm_medium=paid_social&utm_campaign=spring_sale",
        1.5,
    ),
    source(
        "https://t.co/",
        "?utm_source=twitter&utm_medium=social&utm_campaign=launch_week",
        1.0,
    ),
    source(
        "https://www.linkedin.com/",
        "?utm_source=linkedin&utm_medium=social&utm_campaign=b2b_q3",
        1.0,
    ),
    source(
        "",
        "?utm_source=partner&utm_medium=referral&utm_campaign=affiliates",
        0.5,
    ),
];

/// Session lengths 1 to 10 and their relative weights: many bounces, a long tail.
pub const SESSION_LENGTHS: [f64; 10] = [30.0, 18.0, 13.0, 10.0, 8.0, 6.0, 5.0, 4.0, 3.0, 3.0];

/// Relative traffic per tenant-local hour of day (0 to 23).
pub const DIURNAL: [f64; 24] = [
    0.25, 0.18, 0.14, 0.12, 0.12, 0.16, 0.28, 0.45, 0.65, 0.80, 0.90, 0.95, 0.97, 1.00, 1.00, 0.97,
    0.92, 0.88, 0.85, 0.82, 0.75, 0.60, 0.45, 0.33,
];

/// First octets of public IPv4 ranges on several continents.
pub const IPV4_FIRST: &[u8] = &[
    3, 5, 24, 31, 37, 41, 45, 49, 62, 66, 73, 77, 81, 86, 88, 91, 93, 98, 101, 103, 110, 115, 122,
    125, 133, 138, 141, 151, 157, 165, 168, 177, 179, 181, 186, 189, 190, 196, 200, 201, 203, 210,
    213, 217, 220,
];

/// Prefixes of public IPv6 ranges.
pub const IPV6_PREFIXES: &[&str] = &[
    "2a02", "2a01", "2600", "2601", "2804", "2405", "240e", "2c0f",
];

/// Outbound link targets.
pub const OUTBOUND: &[&str] = &[
    "https://github.com/beacon-analytics/beacon",
    "https://twitter.com/beacon",
    "https://www.youtube.com/watch?v=x7X9w_GIm1s",
    "https://docs.rs/tokio/latest/tokio/",
    "https://stripe.com/pricing",
    "https://en.wikipedia.org/wiki/Web_analytics",
    "https://www.linkedin.com/company/beacon",
    "https://news.ycombinator.com/item?id=40283147",
];

/// Plans chosen at signup.
pub const PLANS: &[&str] = &["free", "starter", "growth", "business", "enterprise"];

/// Signup methods.
pub const SIGNUP_METHODS: &[&str] = &["email", "google", "github"];

/// Blog authors.
pub const AUTHORS: &[&str] = &[
    "Ana Lima",
    "Kenji Sato",
    "Priya Nair",
    "Tom Becker",
    "Zoe Martin",
];

/// Base prices in US dollars.
pub const PRICES: &[f64] = &[4.99, 9.0, 12.5, 19.0, 29.99, 49.0, 79.0, 99.0, 149.5, 299.0];

/// The currency of a tenant's shop (its revenue is counted in it): picked by the weights of
/// [`CURRENCIES`] from a hash of its id, so every run and the tenant setup agree.
pub fn currency_of(tenant_id: &str) -> (&'static str, f64) {
    let hash = tenant_id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let total: f64 = CURRENCIES.iter().map(|c| c.2).sum();
    let mut point = (hash % 1_000_000) as f64 / 1_000_000.0 * total;
    for &(code, per_dollar, weight) in CURRENCIES {
        if point < weight {
            return (code, per_dollar);
        }
        point -= weight;
    }
    ("USD", 1.0)
}

/// Currencies: code, units per US dollar, relative weight.
pub const CURRENCIES: &[(&str, f64, f64)] = &[
    ("USD", 1.0, 50.0),
    ("EUR", 0.92, 28.0),
    ("GBP", 0.79, 8.0),
    ("JPY", 155.0, 5.0),
    ("INR", 83.0, 4.0),
    ("BRL", 5.1, 3.0),
    ("AUD", 1.5, 2.0),
];

/// What a page is, which decides its custom events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageKind {
    /// Home, about, legal pages.
    General,
    /// Pricing and signup pages: signups happen here.
    Conversion,
    /// A blog post: has an author.
    Blog,
    /// A documentation page: downloads and outbound links.
    Docs,
    /// A product page or the checkout: purchases happen here.
    Product,
}

/// One page of a site.
pub struct Page {
    /// Path, starting with `/`.
    pub path: String,
    /// Title without the site name.
    pub title: String,
    /// Kind of page.
    pub kind: PageKind,
    /// Product SKU for product pages; empty otherwise.
    pub sku: String,
}

/// Pages that always rank first, in this order.
const TOP_PAGES: &[(&str, &str, PageKind)] = &[
    ("/", "Home", PageKind::General),
    ("/pricing", "Pricing", PageKind::Conversion),
    ("/features", "Features", PageKind::General),
    ("/blog", "Blog", PageKind::General),
    ("/docs", "Documentation", PageKind::Docs),
    ("/signup", "Sign up", PageKind::Conversion),
    ("/login", "Log in", PageKind::General),
    ("/about", "About us", PageKind::General),
];

/// How many pages always keep their rank; the others are ranked differently per tenant.
pub const FIXED_RANKS: usize = TOP_PAGES.len();

const OTHER_PAGES: &[(&str, &str, PageKind)] = &[
    ("/contact", "Contact", PageKind::General),
    ("/careers", "Careers", PageKind::General),
    ("/changelog", "Changelog", PageKind::General),
    ("/privacy", "Privacy policy", PageKind::General),
    ("/terms", "Terms of service", PageKind::General),
    ("/cart", "Your cart", PageKind::Product),
    ("/checkout", "Checkout", PageKind::Product),
    (
        "/integrations/shopify",
        "Shopify integration",
        PageKind::Docs,
    ),
    (
        "/integrations/wordpress",
        "WordPress integration",
        PageKind::Docs,
    ),
    (
        "/integrations/nextjs",
        "Next.js integration",
        PageKind::Docs,
    ),
];

const BLOG_SLUGS: &[&str] = &[
    "privacy-first-analytics",
    "why-we-dropped-cookies",
    "how-we-cut-our-cloud-bill-in-half",
    "postgres-vs-clickhouse-for-events",
    "rust-at-scale",
    "launch-week-recap",
    "gdpr-without-the-banner",
    "a-year-of-self-hosting",
    "counting-unique-visitors-with-sketches",
    "time-zones-are-hard",
    "bounce-rate-explained",
    "utm-parameters-done-right",
    "what-we-learned-from-1000-customers",
    "the-case-for-server-side-tracking",
    "building-a-status-page",
    "open-source-sustainability",
    "dark-mode-is-here",
    "our-pricing-changes",
    "conversion-goals-101",
    "migrating-from-google-analytics",
    "benchmarking-our-ingest-path",
    "exactly-once-in-practice",
    "designing-dashboards-people-read",
    "seo-basics-for-developers",
    "hiring-our-first-engineer",
    "remote-work-two-years-in",
    "a-tour-of-the-api",
    "funnels-and-why-they-lie",
    "customer-story-acme",
    "customer-story-globex",
];

const DOC_SECTIONS: &[&str] = &[
    "getting-started",
    "tracking",
    "api",
    "integrations",
    "self-hosting",
];

const DOC_PAGES: &[&str] = &[
    "overview",
    "installation",
    "configuration",
    "events",
    "goals",
    "props",
    "revenue",
    "troubleshooting",
];

const PRODUCT_ADJECTIVES: &[&str] = &[
    "Classic",
    "Compact",
    "Deluxe",
    "Everyday",
    "Featherweight",
    "Heritage",
    "Modern",
    "Rugged",
    "Studio",
    "Urban",
    "Vintage",
    "Waterproof",
];

const PRODUCT_NOUNS: &[&str] = &[
    "Backpack",
    "Desk Lamp",
    "Espresso Grinder",
    "Headphones",
    "Keyboard",
    "Notebook",
    "Running Shoes",
    "Sunglasses",
    "Tent",
    "Water Bottle",
];

fn title_from_slug(slug: &str) -> String {
    let text = slug.replace('-', " ");
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn page(path: String, title: String, kind: PageKind) -> Page {
    Page {
        path,
        title,
        kind,
        sku: String::new(),
    }
}

/// The page catalogue, most popular first: the fixed top pages, then blog posts, docs pages,
/// products and the rest in an order shuffled by `rng`.
pub fn pages(rng: &mut StdRng) -> Vec<Page> {
    let mut rest: Vec<Page> = OTHER_PAGES
        .iter()
        .map(|(path, title, kind)| page((*path).to_owned(), (*title).to_owned(), *kind))
        .collect();
    rest.extend(BLOG_SLUGS.iter().map(|slug| {
        page(
            format!("/blog/{slug}"),
            title_from_slug(slug),
            PageKind::Blog,
        )
    }));
    for section in DOC_SECTIONS {
        rest.extend(DOC_PAGES.iter().map(|name| {
            let title = format!("{} – {}", title_from_slug(name), title_from_slug(section));
            page(format!("/docs/{section}/{name}"), title, PageKind::Docs)
        }));
    }
    for (i, noun) in PRODUCT_NOUNS.iter().enumerate() {
        for (j, adjective) in PRODUCT_ADJECTIVES.iter().enumerate() {
            let id = 1000 + i * PRODUCT_ADJECTIVES.len() + j;
            rest.push(Page {
                path: format!("/products/{id}"),
                title: format!("{adjective} {noun}"),
                kind: PageKind::Product,
                sku: format!("sku-{id}"),
            });
        }
    }
    rest.shuffle(rng);
    let mut all: Vec<Page> = TOP_PAGES
        .iter()
        .map(|(path, title, kind)| page((*path).to_owned(), (*title).to_owned(), *kind))
        .collect();
    all.extend(rest);
    all
}

/// A cumulative weight table: picks an index with probability proportional to its weight.
#[derive(Debug, Clone)]
pub struct Cumulative {
    bounds: Vec<f64>,
}

impl Cumulative {
    /// Builds the table from non-negative weights, at least one of them positive.
    pub fn new(weights: impl IntoIterator<Item = f64>) -> Self {
        let mut total = 0.0;
        let bounds = weights
            .into_iter()
            .map(|w| {
                total += w.max(0.0);
                total
            })
            .collect();
        Self { bounds }
    }

    /// Sum of the weights.
    pub fn total(&self) -> f64 {
        self.bounds.last().copied().unwrap_or(0.0)
    }

    /// The index at quantile `u` in `[0, 1)`.
    pub fn at(&self, u: f64) -> usize {
        let target = u * self.total();
        let index = self.bounds.partition_point(|&bound| bound <= target);
        index.min(self.bounds.len().saturating_sub(1))
    }

    /// A random index.
    pub fn pick(&self, rng: &mut StdRng) -> usize {
        self.at(rng.random::<f64>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn bots_are_three_percent() {
        let total: f64 = AGENTS.iter().map(|a| a.weight).sum();
        let bots: f64 = AGENTS.iter().filter(|a| a.bot).map(|a| a.weight).sum();
        let share = bots / total;
        assert!((0.025..0.035).contains(&share), "{share}");
    }

    #[test]
    fn catalogue_paths_are_unique() {
        let pages = pages(&mut StdRng::seed_from_u64(1));
        let mut paths: Vec<&str> = pages.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths[0], "/");
        assert_eq!(paths[1], "/pricing");
        paths.sort_unstable();
        paths.dedup();
        assert_eq!(paths.len(), pages.len());
    }

    #[test]
    fn cumulative_respects_weights() {
        let table = Cumulative::new([1.0, 0.0, 3.0]);
        assert_eq!(table.at(0.0), 0);
        assert_eq!(table.at(0.24), 0);
        assert_eq!(table.at(0.25), 2);
        assert_eq!(table.at(0.999), 2);
    }
}
