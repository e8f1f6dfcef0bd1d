//! Client IP to country, region and city with a MaxMind database.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use maxminddb::Reader;

use crate::IngestError;

/// Where an IP address is, as far as the database knows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Place {
    /// ISO 3166-1 alpha-2 country code, empty when unknown.
    pub country: String,
    /// ISO 3166-2 subdivision code (for example "US-CA"), empty when unknown.
    pub region: String,
    /// English city name, empty when unknown.
    pub city: String,
}

/// An optional MaxMind reader; without a database every place is unknown.
#[derive(Clone, Default)]
pub struct GeoIp {
    reader: Option<Arc<Reader<Vec<u8>>>>,
}

impl GeoIp {
    /// Opens the database at `path`, or none.
    pub fn open(path: Option<&Path>) -> Result<Self, IngestError> {
        let Some(path) = path else {
            return Ok(Self::default());
        };
        let reader = Reader::open_readfile(path).map_err(|source| IngestError::GeoIp {
            path: path.display().to_string(),
            source,
        })?;
        Ok(Self {
            reader: Some(Arc::new(reader)),
        })
    }

    /// The place of `ip`; unknown when there is no database, no record, or a decoding error.
    pub fn locate(&self, ip: IpAddr) -> Place {
        let Some(reader) = &self.reader else {
            return Place::default();
        };
        match reader
            .lookup(ip)
            .and_then(|found| found.decode::<Record<'_>>())
        {
            Ok(Some(record)) => record.place(),
            Ok(None) => Place::default(),
            Err(err) => {
                tracing::debug!(error = %err, "GeoIP lookup failed");
                Place::default()
            }
        }
    }
}

/// A database record in either layout Beacon reads: MaxMind's GeoIP2 (GeoLite2, DB-IP's
/// MaxMind-format files: `country.iso_code`, `subdivisions`, `city.names.en`) or the
/// country-only one of the free databases on the npm registry (`country_code`).
#[derive(Debug, Default, serde::Deserialize)]
struct Record<'a> {
    #[serde(borrow, default)]
    country: Option<Country<'a>>,
    #[serde(borrow, default)]
    country_code: Option<&'a str>,
    #[serde(borrow, default)]
    subdivisions: Vec<Country<'a>>,
    #[serde(borrow, default)]
    city: Option<City<'a>>,
}

#[derive(Debug, Default, serde::Deserialize)]
struct Country<'a> {
    #[serde(borrow, default)]
    iso_code: Option<&'a str>,
}

#[derive(Debug, Default, serde::Deserialize)]
struct City<'a> {
    #[serde(borrow, default)]
    names: std::collections::BTreeMap<&'a str, &'a str>,
}

impl Record<'_> {
    fn place(&self) -> Place {
        let country = self
            .country
            .as_ref()
            .and_then(|c| c.iso_code)
            .or(self.country_code)
            .unwrap_or_default()
            .to_owned();
        let region = self
            .subdivisions
            .first()
            .and_then(|s| s.iso_code)
            .map(|code| format!("{country}-{code}"))
            .unwrap_or_default();
        let city = self
            .city
            .as_ref()
            .and_then(|c| c.names.get("en").copied())
            .unwrap_or_default()
            .to_owned();
        Place {
            country,
            region,
            city,
        }
    }
}

#[cfg(test)]
mod tests {
    use maxminddb_writer::Database;
    use maxminddb_writer::metadata::IpVersion;
    use maxminddb_writer::paths::IpAddrWithMask;

    use super::*;

    /// A database of one network holding `record`.
    fn database(dir: &Path, record: serde_json::Value) -> GeoIp {
        let mut db = Database::default();
        db.metadata.ip_version = IpVersion::V4;
        db.metadata.database_type = "test".into();
        db.metadata.binary_format_major_version = 2;
        let value = db.insert_value(record).expect("value");
        db.insert_node(
            "81.2.69.0/24".parse::<IpAddrWithMask>().expect("net"),
            value,
        );
        let path = dir.join("test.mmdb");
        let file = std::fs::File::create(&path).expect("file");
        db.write_to(std::io::BufWriter::new(file)).expect("write");
        GeoIp::open(Some(&path)).expect("open")
    }

    #[test]
    fn reads_geoip2_and_country_code_layouts() {
        let dir = tempfile::tempdir().expect("dir");
        let ip: IpAddr = "81.2.69.7".parse().expect("ip");
        let geoip2 = database(
            dir.path(),
            serde_json::json!({"country": {"iso_code": "GB"}, "subdivisions": [{"iso_code": "ENG"}],
                "city": {"names": {"en": "London", "de": "London"}}}),
        );
        assert_eq!(
            geoip2.locate(ip),
            Place {
                country: "GB".into(),
                region: "GB-ENG".into(),
                city: "London".into()
            }
        );
        let npm = database(dir.path(), serde_json::json!({"country_code": "DE"}));
        assert_eq!(npm.locate(ip).country, "DE");
        assert_eq!(npm.locate("8.8.8.8".parse().expect("ip")), Place::default());
    }
}
