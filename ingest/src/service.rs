//! The `beacon.ingest.v1.IngestService` implementation.

use std::net::IpAddr;

use beacon_core::auth::{Registry, request_key};
use beacon_core::backends::Backends;
use beacon_core::meta::{KeyKind, Tenant};
use beacon_core::partition::partition_of;
use beacon_core::time::now_ms;
use beacon_core::visitor::VisitorHasher;
use beacon_proto::ingest::v1::{
    Event, EventResult, EventStatus, ImportEventsRequest, ImportEventsResponse, SendEventsRequest,
    SendEventsResponse, ingest_service_server,
};
use beacon_proto::pipeline::v1::LoggedEvent;
use tonic::{Request, Response, Status};

use crate::geo::GeoIp;
use crate::publisher::Publisher;
use crate::validate::{Limits, Mode, check_batch};
use crate::{IngestArgs, IngestError};

/// Validates, authenticates and publishes events.
pub struct IngestService {
    registry: Registry,
    hasher: VisitorHasher,
    geo: GeoIp,
    publisher: Publisher,
    partitions: u32,
    limits: Limits,
    /// Events by outcome (accepted, rejected) and, for rejections, the field at fault.
    events: opentelemetry::metrics::Counter<u64>,
}

impl IngestService {
    /// Builds the service over `backends`.
    pub fn new(args: &IngestArgs, backends: &Backends) -> Result<Self, IngestError> {
        Ok(Self {
            registry: Registry::new(backends.tenants.clone()),
            hasher: VisitorHasher::new(backends.salts.clone()),
            geo: GeoIp::open(args.geoip_db.as_deref())?,
            publisher: Publisher::new(backends.events.clone(), backends.partitions, args.linger),
            partitions: backends.partitions,
            limits: Limits::default(),
            events: beacon_core::observe::meter()
                .u64_counter("beacon_ingest_events")
                .with_description("Events received by ingest, by outcome and rejected field")
                .build(),
        })
    }

    fn count(&self, outcome: &'static str, field: &str, n: u64) {
        if n > 0 {
            let labels = [
                opentelemetry::KeyValue::new("outcome", outcome),
                opentelemetry::KeyValue::new("field", field.to_owned()),
            ];
            self.events.add(n, &labels);
        }
    }

    /// The publisher, to close it after the server stopped.
    pub fn publisher(&self) -> Publisher {
        self.publisher.clone()
    }

    /// The logged form of `event`: the inner error rejects this event (its field and limit),
    /// the outer one fails the whole call (a backend that may work on a retry).
    async fn to_logged(
        &self,
        tenant: &Tenant,
        event: Event,
        timestamp_ms: i64,
        received_ms: i64,
        fallback_ip: Option<IpAddr>,
    ) -> Result<Result<LoggedEvent, String>, Status> {
        let stated = !event.visitor_id.is_empty();
        let ip = if event.client_ip.is_empty() {
            // A stated visitor is not the sender: the sender's address says nothing of them.
            fallback_ip.filter(|_| !stated)
        } else {
            match event.client_ip.parse::<IpAddr>() {
                Ok(ip) => Some(ip),
                Err(_) => {
                    return Ok(Err(format!(
                        "client_ip: {:?} is not an IPv4 or IPv6 address",
                        event.client_ip
                    )));
                }
            }
        };
        // A stated visitor is hashed by its id alone; the others by address and user agent,
        // borrowed as before (no copy of the agent per event).
        let who = if stated {
            format!("visitor:{}", event.visitor_id)
        } else {
            ip.map(|ip| ip.to_string()).unwrap_or_default()
        };
        let agent = if stated {
            ""
        } else {
            event.user_agent.as_str()
        };
        let visitor = self
            .hasher
            .hash(
                (&who, agent),
                &tenant.id,
                &tenant.time_zone,
                received_ms,
            )
            .await
            .map_err(|err| {
                Status::unavailable(format!(
                    "the visitor salt store is unavailable, nothing of this call was accepted; retry: {err}"
                ))
            })?;
        let place = ip.map(|ip| self.geo.locate(ip)).unwrap_or_default();
        let event_id = if event.id.is_empty() {
            uuid::Uuid::now_v7().to_string()
        } else {
            event.id
        };
        Ok(Ok(LoggedEvent {
            tenant_id: tenant.id.clone(),
            event_id,
            name: event.name,
            timestamp_ms,
            received_ms,
            url: event.url,
            referrer: event.referrer,
            title: event.title,
            user_agent: event.user_agent,
            props: event.props,
            revenue: event.revenue,
            country: place.country,
            region: place.region,
            city: place.city,
            visitor: visitor.id,
            previous_visitor: visitor.previous,
            visitor_stated: stated,
            non_interactive: event.non_interactive,
            time_zone: tenant.time_zone.clone(),
            currency: tenant.currency.clone(),
            engagement: event.engagement,
        }))
    }
}

/// Only a server key may state a visitor's address or id: a public ingest key could otherwise
/// mint visitors and places at will.
fn client_ip_allowed(event: &Event, kind: KeyKind) -> Result<(), String> {
    if kind == KeyKind::Server {
        Ok(())
    } else if !event.client_ip.is_empty() {
        Err(
            "client_ip: only server keys may set it; events sent with an ingest key take the \
             connection's address"
                .to_owned(),
        )
    } else if !event.visitor_id.is_empty() {
        Err("visitor_id: only server keys may set it".to_owned())
    } else {
        Ok(())
    }
}

/// Revenue counts only in the tenant's currency: Beacon converts none.
fn currency_allowed(event: &Event, tenant: &Tenant) -> Result<(), String> {
    let Some(revenue) = &event.revenue else {
        return Ok(());
    };
    if tenant.currency.is_empty() {
        return Err(format!(
            "revenue: tenant {:?} has no currency; set one with AdminService.SetCurrency \
             (`beacon admin set-currency`)",
            tenant.id
        ));
    }
    if revenue.currency != tenant.currency {
        return Err(format!(
            "revenue.currency: {:?} is not the tenant's currency, {:?}",
            revenue.currency, tenant.currency
        ));
    }
    Ok(())
}

fn rejected(id: String, error: String) -> EventResult {
    EventResult {
        id,
        status: EventStatus::Rejected as i32,
        error,
    }
}

impl IngestService {
    /// Checks, stamps and publishes a batch arriving as `mode`; answers once the accepted events
    /// are durable.
    async fn ingest(
        &self,
        request: Request<SendEventsRequest>,
        mode: Mode,
    ) -> Result<Response<SendEventsResponse>, Status> {
        let key = request_key(request.metadata())?;
        let (tenant, kind) = self
            .registry
            .authenticate_kind(&key, KeyKind::Ingest)
            .await?;
        if mode == Mode::Import && kind != KeyKind::Server {
            return Err(Status::permission_denied(
                "ImportEvents needs a server key (secret); create one with `beacon admin create-key --kind server`",
            ));
        }
        let fallback_ip = beacon_core::grpc::client_ip(&request);
        let events = request.into_inner().events;
        check_batch(events.len()).map_err(Status::invalid_argument)?;
        let now = now_ms();
        let mut results = Vec::with_capacity(events.len());
        let mut accepted = Vec::with_capacity(events.len());
        for (index, event) in events.into_iter().enumerate() {
            let checked = self
                .limits
                .check_as(&event, now, mode)
                .and_then(|ts| client_ip_allowed(&event, kind).map(|()| ts))
                .and_then(|ts| currency_allowed(&event, &tenant).map(|()| ts));
            let id = event.id.clone();
            let logged = match checked {
                Ok(ts) => self.to_logged(&tenant, event, ts, now, fallback_ip).await?,
                Err(err) => Err(err),
            };
            match logged {
                Ok(logged) => {
                    results.push(EventResult {
                        id: logged.event_id.clone(),
                        status: EventStatus::Accepted as i32,
                        error: String::new(),
                    });
                    accepted.push(logged);
                }
                Err(err) => {
                    let field = err
                        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                        .next()
                        .unwrap_or_default();
                    self.count("rejected", field, 1);
                    results.push(rejected(id, format!("events[{index}].{err}")));
                }
            }
        }
        let accepted_count = accepted.len() as u32;
        if !accepted.is_empty() {
            let partition = partition_of(&tenant.id, self.partitions);
            self.publisher.publish(partition, accepted).await?;
            self.count("accepted", "", u64::from(accepted_count));
        }
        tracing::debug!(tenant = %tenant.id, ?mode, accepted = accepted_count, rejected = results.len() as u32 - accepted_count, "events ingested");
        Ok(Response::new(SendEventsResponse {
            rejected: results.len() as u32 - accepted_count,
            accepted: accepted_count,
            results,
        }))
    }
}

#[tonic::async_trait]
impl ingest_service_server::IngestService for IngestService {
    async fn send_events(
        &self,
        request: Request<SendEventsRequest>,
    ) -> Result<Response<SendEventsResponse>, Status> {
        self.ingest(request, Mode::Live).await
    }

    async fn import_events(
        &self,
        request: Request<ImportEventsRequest>,
    ) -> Result<Response<ImportEventsResponse>, Status> {
        let request = request.map(|r| SendEventsRequest { events: r.events });
        let reply = self.ingest(request, Mode::Import).await?;
        Ok(reply.map(|r| ImportEventsResponse {
            results: r.results,
            accepted: r.accepted,
            rejected: r.rejected,
        }))
    }
}

#[cfg(test)]
mod tests {
    use beacon_proto::ingest::v1::Revenue;

    use super::*;

    fn with_revenue(currency: &str) -> Event {
        Event {
            revenue: Some(Revenue {
                amount: 10.0,
                currency: currency.into(),
            }),
            ..Event::default()
        }
    }

    #[test]
    fn revenue_counts_in_the_tenants_currency_only() {
        let mut tenant = Tenant {
            id: "shop".into(),
            ..Tenant::default()
        };
        let err = currency_allowed(&with_revenue("EUR"), &tenant).expect_err("no currency");
        assert!(err.contains("tenant \"shop\" has no currency"), "{err}");
        tenant.currency = "EUR".into();
        assert!(currency_allowed(&with_revenue("EUR"), &tenant).is_ok());
        assert!(currency_allowed(&Event::default(), &tenant).is_ok());
        let err = currency_allowed(&with_revenue("USD"), &tenant).expect_err("another one");
        assert_eq!(
            err,
            "revenue.currency: \"USD\" is not the tenant's currency, \"EUR\""
        );
    }

    #[test]
    fn only_server_keys_state_visitors() {
        let stated = Event {
            visitor_id: "1234.5678".into(),
            ..Event::default()
        };
        assert!(client_ip_allowed(&stated, KeyKind::Server).is_ok());
        let err = client_ip_allowed(&stated, KeyKind::Ingest).expect_err("public key");
        assert_eq!(err, "visitor_id: only server keys may set it");
        assert!(client_ip_allowed(&Event::default(), KeyKind::Ingest).is_ok());
    }
}
