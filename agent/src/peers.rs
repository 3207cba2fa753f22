//! [`tern_cluster::Peers`] over gRPC: the calls one agent makes to another, each on
//! the reused channel to that peer and with its own deadline. Conversions and the
//! status mapping are `convert`'s.

use crate::convert;
use crate::limits::MessageLimits;
use crate::node::Node;
use std::time::Duration;
use tern_cluster::peer::{CALL_DEADLINE_MS, MIGRATION_SILENCE_MAX_MS, PREPARE_DEADLINE_MS, PROBE_DEADLINE_MS};
use tern_cluster::{Error, MigrateRequest, MigrationEvent, Peers, PrepareRequest, Prepared, RestartRequest};
use tern_proto::v1 as pb;

/// `msg` with a deadline of `ms` and the caller's trace context.
fn within<T>(msg: T, ms: u64) -> tonic::Request<T> {
    crate::transport::request_within(msg, Duration::from_millis(ms))
}

impl Node {
    fn migration_client(
        &self,
        addr: &str,
    ) -> Result<pb::migration_client::MigrationClient<tonic::transport::Channel>, Error> {
        Ok(pb::migration_client::MigrationClient::new(self.channel(addr)?).with_message_limits())
    }
}

#[tonic::async_trait]
impl Peers for Node {
    async fn prepare(&self, addr: &str, req: PrepareRequest) -> Result<Prepared, Error> {
        let req = convert::prepare_request_to_pb(req)?;
        let answer = self.migration_client(addr)?.prepare(within(req, PREPARE_DEADLINE_MS)).await;
        convert::prepared(answer.map_err(convert::error)?.into_inner())
    }

    async fn finish(&self, addr: &str, operation: u64, domain: &str, committed: bool) -> Result<(), Error> {
        let req = pb::FinishRequest { operation_id: operation, domain: domain.to_string(), committed };
        self.migration_client(addr)?.finish(within(req, CALL_DEADLINE_MS)).await.map_err(convert::error)?;
        Ok(())
    }

    async fn cancel(&self, addr: &str, domain: &str, actor: &str) -> Result<u64, Error> {
        let req = pb::CancelRequest {
            operation: "migration".into(),
            domain: domain.to_string(),
            on_behalf_of: actor.to_string(),
        };
        let answer = self.migration_client(addr)?.cancel(within(req, CALL_DEADLINE_MS)).await;
        Ok(answer.map_err(convert::error)?.into_inner().operation_id)
    }

    async fn probe(&self, addr: &str) -> Result<(), Error> {
        let mut client = pb::cluster_client::ClusterClient::new(self.channel(addr)?).with_message_limits();
        client.status(within(pb::StatusRequest {}, PROBE_DEADLINE_MS)).await.map_err(convert::error)?;
        Ok(())
    }

    async fn migrate(&self, addr: &str, req: MigrateRequest) -> Result<MigrationEvent, Error> {
        let silence = Duration::from_millis(MIGRATION_SILENCE_MAX_MS);
        let req = within(convert::migrate_request_to_pb(req), MIGRATION_SILENCE_MAX_MS);
        let mut stream = self.migration_client(addr)?.migrate(req).await.map_err(convert::error)?.into_inner();
        loop {
            let next = tokio::time::timeout(silence, stream.message()).await.map_err(|_| {
                Error::Timeout(format!("the migration at {addr} sent nothing for {MIGRATION_SILENCE_MAX_MS} ms"))
            })?;
            let Some(message) = next.map_err(convert::error)? else {
                return Err(Error::Unavailable(format!("the migration stream from {addr} ended without an outcome")));
            };
            match convert::event(message) {
                Some(e) if e.is_end() => return Ok(e),
                _ => {} // progress, or an event this agent does not know
            }
        }
    }

    async fn restart(&self, addr: &str, req: RestartRequest) -> Result<bool, Error> {
        let msg = pb::RestartRequest {
            operation_id: req.operation,
            reservation_id: req.reservation,
            token: req.token,
            domain: req.domain,
        };
        let mut client = pb::ha_client::HaClient::new(self.channel(addr)?).with_message_limits();
        let answer = client.restart(within(msg, CALL_DEADLINE_MS)).await.map_err(convert::error)?;
        Ok(answer.into_inner().started)
    }
}
