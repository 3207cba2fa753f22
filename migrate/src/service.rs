//! The `Migration` and `Users` gRPC services over a [`Cluster`].

use crate::report::operation;
use crate::{Cluster, coordinator, target, users};
use std::pin::Pin;
use std::sync::Arc;
use tern_proto::v1 as pb;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

/// Events buffered per migration stream before the coordinator waits on the client.
pub const EVENTS_QUEUE_MAX: usize = 256;
/// At most this many operations are listed.
pub const OPERATIONS_LISTED_MAX: u32 = 1000;

pub struct MigrationService {
    pub cluster: Arc<dyn Cluster>,
    pub registry: Arc<coordinator::Registry>,
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::MigrateEvent, Status>> + Send>>;

#[tonic::async_trait]
impl pb::migration_server::Migration for MigrationService {
    type MigrateStream = EventStream;

    async fn migrate(&self, req: Request<pb::MigrateRequest>) -> Result<Response<Self::MigrateStream>, Status> {
        let req = req.into_inner();
        if req.domain.is_empty() || req.target.is_empty() {
            return Err(Status::invalid_argument("a migration needs a domain and a target"));
        }
        let (tx, rx) = tokio::sync::mpsc::channel(EVENTS_QUEUE_MAX);
        let (cluster, registry) = (self.cluster.clone(), self.registry.clone());
        // The migration runs to its end even if the client disconnects (like ldm's).
        tokio::spawn(async move {
            let errors = tx.clone();
            if let Err(s) = coordinator::migrate(cluster, registry, req, tx).await {
                let _ = errors.send(Err(s)).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn prepare(&self, req: Request<pb::PrepareRequest>) -> Result<Response<pb::PrepareResponse>, Status> {
        target::prepare(self.cluster.as_ref(), req.into_inner()).await.map(Response::new)
    }

    async fn finish(&self, req: Request<pb::FinishRequest>) -> Result<Response<pb::FinishResponse>, Status> {
        target::finish(self.cluster.as_ref(), req.into_inner()).await.map(Response::new)
    }

    async fn cancel(&self, req: Request<pb::CancelRequest>) -> Result<Response<pb::CancelResponse>, Status> {
        let req = req.into_inner();
        if req.operation != "migration" {
            return Err(Status::invalid_argument(format!("cannot cancel {:?}; only \"migration\"", req.operation)));
        }
        let id = coordinator::cancel(self.cluster.as_ref(), &req.domain).await?;
        Ok(Response::new(pb::CancelResponse { operation_id: id }))
    }

    async fn list_operations(
        &self,
        req: Request<pb::ListOperationsRequest>,
    ) -> Result<Response<pb::ListOperationsResponse>, Status> {
        let limit = match req.into_inner().limit {
            0 => OPERATIONS_LISTED_MAX,
            n => n.min(OPERATIONS_LISTED_MAX),
        } as usize;
        let operations =
            self.cluster.state().read(|s| s.operations().values().rev().take(limit).map(operation).collect());
        Ok(Response::new(pb::ListOperationsResponse { operations }))
    }
}

pub struct UsersService(pub Arc<dyn Cluster>);

#[tonic::async_trait]
impl pb::users_server::Users for UsersService {
    async fn add_user(&self, req: Request<pb::AddUserRequest>) -> Result<Response<pb::AddUserResponse>, Status> {
        users::add(self.0.as_ref(), req.into_inner()).await.map(Response::new)
    }

    async fn remove_user(
        &self,
        req: Request<pb::RemoveUserRequest>,
    ) -> Result<Response<pb::RemoveUserResponse>, Status> {
        users::remove(self.0.as_ref(), req.into_inner()).await.map(Response::new)
    }

    async fn list_users(&self, _req: Request<pb::ListUsersRequest>) -> Result<Response<pb::ListUsersResponse>, Status> {
        Ok(Response::new(users::list(self.0.as_ref())))
    }
}

pub struct HostsService(pub Arc<dyn Cluster>);

type HostStream = Pin<Box<dyn Stream<Item = Result<pb::HostEvent, Status>> + Send>>;

impl HostsService {
    fn spawn<F, Fut>(&self, req: pb::HostRequest, run: F) -> Result<Response<HostStream>, Status>
    where
        F: FnOnce(Arc<dyn Cluster>, pb::HostRequest, crate::hosts::HostEvents) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<(), Status>> + Send + 'static,
    {
        if req.host.is_empty() {
            return Err(Status::invalid_argument("name the host"));
        }
        let (tx, rx) = tokio::sync::mpsc::channel(EVENTS_QUEUE_MAX);
        let cluster = self.0.clone();
        tokio::spawn(async move {
            let errors = tx.clone();
            if let Err(s) = run(cluster, req, tx).await {
                let _ = errors.send(Err(s)).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

#[tonic::async_trait]
impl pb::hosts_server::Hosts for HostsService {
    type EvacuateStream = HostStream;
    type RestoreStream = HostStream;

    async fn evacuate(&self, req: Request<pb::HostRequest>) -> Result<Response<HostStream>, Status> {
        self.spawn(req.into_inner(), crate::hosts::evacuate)
    }

    async fn restore(&self, req: Request<pb::HostRequest>) -> Result<Response<HostStream>, Status> {
        self.spawn(req.into_inner(), crate::hosts::restore)
    }
}
