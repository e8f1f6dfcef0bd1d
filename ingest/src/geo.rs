//! Client IP to country, region and city with a MaxMind database.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use maxminddb::{Reader, geoip2};

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
        let city = match reader
            .lookup(ip)
            .and_then(|found| found.decode::<geoip2::City>())
        {
            Ok(Some(city)) => city,
            Ok(None) => return Place::default(),
            Err(err) => {
                tracing::debug!(error = %err, "GeoIP lookup failed");
                return Place::default();
            }
        };
        let country = city.country.iso_code.unwrap_or_default().to_owned();
        let region = city
            .subdivisions
            .first()
            .and_then(|s| s.iso_code)
            .map(|code| format!("{country}-{code}"))
            .unwrap_or_default();
        let name = city.city.names.english.unwrap_or_default().to_owned();
        Place {
            country,
            region,
            city: name,
        }
    }
}
