//! A client of the public gateway: gRPC for ingest, insights and admin, HTTP for beacons.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use beacon_core::auth::with_bearer;
use beacon_proto::admin::v1::admin_service_client::AdminServiceClient;
use beacon_proto::admin::v1::{
    CreateKeyRequest, CreateTenantRequest, GetReprocessRequest, KeyKind, ReprocessJob,
    StartReprocessRequest,
};
use beacon_proto::ingest::v1::ingest_service_client::IngestServiceClient;
use beacon_proto::ingest::v1::{
    Event, ImportEventsRequest, ImportEventsResponse, SendEventsRequest, SendEventsResponse,
};
use beacon_proto::insights::v1::insights_service_client::InsightsServiceClient;
use beacon_proto::insights::v1::{
    DateRange, Dimension, GetAggregateRequest, GetBreakdownRequest, GetTimeseriesRequest, Interval,
    Metric, RunReportRequest, RunReportResponse,
};
use tonic::Status;
use tonic::transport::Channel;

/// The numbers the tests compare.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Unique visitors.
    pub visitors: u64,
    /// Sessions.
    pub visits: u64,
    /// Pageviews.
    pub pageviews: u64,
    /// Events (pageviews included).
    pub events: u64,
    /// Sessions with fewer than two pageviews (from the bounce rate and the visits).
    pub bounces: u64,
    /// Total session duration, milliseconds (from the mean visit duration and the visits).
    pub duration_ms: u64,
}

impl Counts {
    /// Whether these numbers, read from Beacon, agree with an oracle's `exact` ones: every
    /// count equal, and the visitors equal or one short. Beacon counts visitors with HLL sketches
    /// that keep each visitor's 32-bit coupon below about 1,500 visitors, so two visitors can
    /// share one (about 5 in 10,000 for a day of 400 visitors, with salts fresh in every run);
    /// a second shared coupon in one day is a few in ten million.
    pub fn agrees_with(&self, exact: &Counts) -> bool {
        let visitors_agree = self.visitors <= exact.visitors && self.visitors + 1 >= exact.visitors;
        visitors_agree
            && Counts {
                visitors: exact.visitors,
                ..*self
            } == *exact
    }
}

/// Whether every row of `seen` [agrees](Counts::agrees_with) with the row of the same key in
/// `exact`, and both have the same keys.
pub fn all_agree<K: Ord>(seen: &BTreeMap<K, Counts>, exact: &BTreeMap<K, Counts>) -> bool {
    seen.len() == exact.len()
        && seen
            .iter()
            .zip(exact)
            .all(|((k, s), (l, e))| k == l && s.agrees_with(e))
}

/// The metrics [`Counts`] are derived from.
pub const METRICS: [Metric; 6] = [
    Metric::Visitors,
    Metric::Visits,
    Metric::Pageviews,
    Metric::Events,
    Metric::BounceRate,
    Metric::VisitDuration,
];

/// The numbers of a row's metric values (all of [`METRICS`] must be among them).
pub fn counts(values: &[beacon_proto::insights::v1::MetricValue]) -> Counts {
    let get = |m: Metric| {
        values
            .iter()
            .find(|v| v.metric == m as i32)
            .map_or(0.0, |v| v.value)
    };
    let visits = get(Metric::Visits);
    Counts {
        visitors: get(Metric::Visitors).round() as u64,
        visits: visits.round() as u64,
        pageviews: get(Metric::Pageviews).round() as u64,
        events: get(Metric::Events).round() as u64,
        bounces: (get(Metric::BounceRate) * visits / 100.0).round() as u64,
        duration_ms: (get(Metric::VisitDuration) * visits * 1000.0).round() as u64,
    }
}

/// A gateway client: the public port, and the admin listener for tenants and keys.
#[derive(Clone)]
pub struct Client {
    channel: Channel,
    admin: Channel,
    /// The gateway URL.
    pub url: String,
    http: reqwest::Client,
}

/// A channel to `url`, retrying for up to 60 s while the gateway starts.
async fn connect_channel(url: &str) -> anyhow::Result<Channel> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match Channel::from_shared(url.to_owned())?.connect().await {
            Ok(channel) => return Ok(channel),
            Err(err) if Instant::now() > deadline => {
                return Err(err).with_context(|| format!("connecting to {url}"));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

impl Client {
    /// Connects to the public port `url` and the admin listener `admin`, retrying for up to
    /// 60 s while the gateway starts.
    pub async fn connect(url: &str, admin: &str) -> anyhow::Result<Self> {
        Ok(Self {
            channel: connect_channel(url).await?,
            admin: connect_channel(admin).await?,
            url: url.to_owned(),
            http: reqwest::Client::new(),
        })
    }

    /// Connects to `cluster`'s first gateway; a failure carries the tail of every role's log,
    /// since a gateway that never listens is most often a role that failed to start.
    pub async fn of(cluster: &crate::Cluster) -> anyhow::Result<Self> {
        Self::connect(&cluster.gateway(), &cluster.admin())
            .await
            .map_err(|err| anyhow::anyhow!("{err:#}\n{}", cluster.logs()))
    }

    /// Creates a tenant (retrying while upstreams start) and returns a server key (it may state
    /// visitors' addresses, as the generated traffic does) and a read key.
    pub async fn create_tenant(
        &self,
        admin_token: &str,
        id: &str,
        time_zone: &str,
    ) -> anyhow::Result<(String, String)> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let read = loop {
            let request = with_bearer(
                admin_token,
                CreateTenantRequest {
                    id: id.into(),
                    name: id.into(),
                    time_zone: time_zone.into(),
                },
            )?;
            match AdminServiceClient::new(self.admin.clone())
                .create_tenant(request)
                .await
            {
                Ok(reply) => break reply.into_inner().read_key,
                Err(status) if Instant::now() > deadline => {
                    return Err(anyhow::anyhow!("creating tenant {id}: {status}"));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        };
        let server = self.create_key(admin_token, id, KeyKind::Server).await?;
        Ok((server, read))
    }

    /// Adds a key of `kind` to tenant `id`.
    pub async fn create_key(
        &self,
        admin_token: &str,
        id: &str,
        kind: KeyKind,
    ) -> anyhow::Result<String> {
        let request = with_bearer(
            admin_token,
            CreateKeyRequest {
                tenant_id: id.into(),
                kind: kind as i32,
            },
        )?;
        let reply = AdminServiceClient::new(self.admin.clone())
            .create_key(request)
            .await
            .with_context(|| format!("creating a {} key for {id}", kind.as_str_name()))?;
        Ok(reply.into_inner().key)
    }

    /// The admin API client.
    pub fn admin(&self) -> AdminServiceClient<Channel> {
        AdminServiceClient::new(self.admin.clone())
    }

    /// The public port as a raw channel (for services the client does not wrap).
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// Sends a batch of events with an ingest key.
    pub async fn send(&self, key: &str, events: Vec<Event>) -> Result<SendEventsResponse, Status> {
        IngestServiceClient::new(self.channel.clone())
            .send_events(with_bearer(key, SendEventsRequest { events })?)
            .await
            .map(tonic::Response::into_inner)
    }

    /// Imports a batch of events with a server key.
    pub async fn import(
        &self,
        key: &str,
        events: Vec<Event>,
    ) -> Result<ImportEventsResponse, Status> {
        IngestServiceClient::new(self.channel.clone())
            .import_events(with_bearer(key, ImportEventsRequest { events })?)
            .await
            .map(tonic::Response::into_inner)
    }

    /// Registers tenant `tenant`'s site domains; returns them as stored.
    pub async fn set_domains(
        &self,
        admin_token: &str,
        tenant: &str,
        domains: &[&str],
    ) -> Result<Vec<String>, Status> {
        let request = with_bearer(
            admin_token,
            beacon_proto::admin::v1::SetDomainsRequest {
                tenant_id: tenant.into(),
                domains: domains.iter().map(|d| (*d).to_owned()).collect(),
            },
        )?;
        AdminServiceClient::new(self.admin.clone())
            .set_domains(request)
            .await
            .map(|reply| reply.into_inner().domains)
    }

    /// Sets the currency a tenant's revenue is counted in.
    pub async fn set_currency(
        &self,
        admin_token: &str,
        tenant: &str,
        currency: &str,
    ) -> Result<(), Status> {
        let request = with_bearer(
            admin_token,
            beacon_proto::admin::v1::SetCurrencyRequest {
                tenant_id: tenant.into(),
                currency: currency.into(),
            },
        )?;
        AdminServiceClient::new(self.admin.clone())
            .set_currency(request)
            .await
            .map(|_| ())
    }

    /// Replaces a tenant's goals.
    pub async fn set_goals(
        &self,
        admin_token: &str,
        tenant: &str,
        goals: Vec<beacon_proto::admin::v1::Goal>,
    ) -> Result<(), Status> {
        let request = with_bearer(
            admin_token,
            beacon_proto::admin::v1::SetGoalsRequest {
                tenant_id: tenant.into(),
                goals,
            },
        )?;
        AdminServiceClient::new(self.admin.clone())
            .set_goals(request)
            .await
            .map(|_| ())
    }

    /// Starts reprocessing a tenant's local dates `[first, last]`; returns the job id.
    pub async fn start_reprocess(
        &self,
        admin_token: &str,
        tenant: &str,
        first: &str,
        last: &str,
    ) -> anyhow::Result<String> {
        let request = with_bearer(
            admin_token,
            StartReprocessRequest {
                tenant_id: tenant.into(),
                all_tenants: false,
                first_date: first.into(),
                last_date: last.into(),
            },
        )?;
        let reply = AdminServiceClient::new(self.admin.clone())
            .start_reprocess(request)
            .await
            .with_context(|| format!("starting to reprocess {tenant}"))?;
        reply
            .into_inner()
            .jobs
            .into_iter()
            .next()
            .map(|job| job.id)
            .context("no job started")
    }

    /// A reprocessing job.
    pub async fn reprocess_job(&self, admin_token: &str, id: &str) -> Result<ReprocessJob, Status> {
        let request = with_bearer(admin_token, GetReprocessRequest { id: id.into() })?;
        AdminServiceClient::new(self.admin.clone())
            .get_reprocess(request)
            .await?
            .into_inner()
            .job
            .ok_or_else(|| Status::internal(format!("job {id} came without its record")))
    }

    /// Daily numbers of a local date range, with a read key.
    pub async fn daily(
        &self,
        key: &str,
        start: &str,
        end: &str,
    ) -> Result<BTreeMap<String, Counts>, Status> {
        let request = GetTimeseriesRequest {
            date_range: Some(DateRange {
                start_date: start.into(),
                end_date: end.into(),
            }),
            interval: Interval::Day as i32,
            metrics: METRICS.iter().map(|m| *m as i32).collect(),
        };
        let reply = InsightsServiceClient::new(self.channel.clone())
            .get_timeseries(with_bearer(key, request)?)
            .await?
            .into_inner();
        Ok(reply
            .points
            .into_iter()
            .map(|p| (p.label, counts(&p.values)))
            .collect())
    }

    /// The values of `metrics` over the range, in their order.
    pub async fn aggregate(
        &self,
        key: &str,
        start: &str,
        end: &str,
        metrics: &[Metric],
    ) -> Result<Vec<f64>, Status> {
        let values = self.get_aggregate(key, start, end, metrics).await?;
        Ok(values.iter().map(|v| v.value).collect())
    }

    /// The range's totals of [`METRICS`].
    pub async fn totals(&self, key: &str, start: &str, end: &str) -> Result<Counts, Status> {
        Ok(counts(
            &self.get_aggregate(key, start, end, &METRICS).await?,
        ))
    }

    async fn get_aggregate(
        &self,
        key: &str,
        start: &str,
        end: &str,
        metrics: &[Metric],
    ) -> Result<Vec<beacon_proto::insights::v1::MetricValue>, Status> {
        let request = GetAggregateRequest {
            date_range: Some(DateRange {
                start_date: start.into(),
                end_date: end.into(),
            }),
            metrics: metrics.iter().map(|m| *m as i32).collect(),
        };
        let reply = InsightsServiceClient::new(self.channel.clone())
            .get_aggregate(with_bearer(key, request)?)
            .await?
            .into_inner();
        Ok(reply.values)
    }

    /// Top values of `dimension` over a local date range, with a read key.
    pub async fn breakdown(
        &self,
        key: &str,
        dimension: Dimension,
        start: &str,
        end: &str,
    ) -> Result<Vec<(String, Counts)>, Status> {
        let request = GetBreakdownRequest {
            date_range: Some(DateRange {
                start_date: start.into(),
                end_date: end.into(),
            }),
            dimension: dimension as i32,
            metrics: METRICS.iter().map(|m| *m as i32).collect(),
            limit: 100,
        };
        let reply = InsightsServiceClient::new(self.channel.clone())
            .get_breakdown(with_bearer(key, request)?)
            .await?
            .into_inner();
        Ok(reply
            .rows
            .into_iter()
            .map(|r| (r.value, counts(&r.values)))
            .collect())
    }

    /// The realtime view, with a read key.
    pub async fn realtime(
        &self,
        key: &str,
        request: beacon_proto::insights::v1::GetRealtimeRequest,
    ) -> Result<beacon_proto::insights::v1::GetRealtimeResponse, Status> {
        InsightsServiceClient::new(self.channel.clone())
            .get_realtime(with_bearer(key, request)?)
            .await
            .map(tonic::Response::into_inner)
    }

    /// Runs a report with a read key.
    pub async fn report(
        &self,
        key: &str,
        request: RunReportRequest,
    ) -> Result<RunReportResponse, Status> {
        InsightsServiceClient::new(self.channel.clone())
            .run_report(with_bearer(key, request)?)
            .await
            .map(tonic::Response::into_inner)
    }

    /// Downloads a report as CSV: `json` (a RunReportRequest's proto3 JSON form) as the body
    /// with the key in a header, or, with `link`, both in the URL. Returns the status and body.
    pub async fn report_csv(
        &self,
        key: &str,
        json: &str,
        link: bool,
    ) -> anyhow::Result<(u16, String)> {
        let url = format!("{}/api/report.csv", self.url);
        let request = if link {
            let query: String = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("request", json)
                .append_pair("key", key)
                .finish();
            self.http.get(format!("{url}?{query}"))
        } else {
            self.http
                .post(url)
                .header("authorization", format!("Bearer {key}"))
                .body(json.to_owned())
        };
        let response = request.send().await.context("downloading a report")?;
        let status = response.status().as_u16();
        Ok((status, response.text().await.unwrap_or_default()))
    }

    /// Posts an HTTP beacon; returns the status code and body.
    pub async fn beacon(
        &self,
        key: Option<&str>,
        body: Vec<u8>,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<(u16, String)> {
        let mut request = self.http.post(format!("{}/api/event", self.url)).body(body);
        if let Some(key) = key {
            request = request.header("authorization", format!("Bearer {key}"));
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.context("posting a beacon")?;
        let status = response.status().as_u16();
        Ok((status, response.text().await.unwrap_or_default()))
    }

    /// Raw HTTP POST of `body` to `path` with `content_type`; returns the response headers and body.
    pub async fn post_raw(
        &self,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> anyhow::Result<(reqwest::header::HeaderMap, Vec<u8>)> {
        let response = self
            .http
            .post(format!("{}{path}", self.url))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .context("posting raw")?;
        let headers = response.headers().clone();
        let body = response.bytes().await.context("reading body")?.to_vec();
        Ok((headers, body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn visitors_may_be_one_short_and_nothing_else_may_differ() {
        let exact = Counts {
            visitors: 428,
            visits: 843,
            pageviews: 2297,
            events: 2961,
            bounces: 133,
            duration_ms: 349_375_959,
        };
        let with = |f: fn(&mut Counts)| {
            let mut c = exact;
            f(&mut c);
            c
        };
        assert!(exact.agrees_with(&exact));
        assert!(with(|c| c.visitors -= 1).agrees_with(&exact));
        assert!(!with(|c| c.visitors -= 2).agrees_with(&exact));
        assert!(!with(|c| c.visitors += 1).agrees_with(&exact));
        assert!(!with(|c| c.events += 1).agrees_with(&exact));
        assert!(!with(|c| c.duration_ms -= 1).agrees_with(&exact));
    }
}
