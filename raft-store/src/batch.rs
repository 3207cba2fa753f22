//! Several clients' writes in one Raft entry (issue 18).
//!
//! Every entry costs the same fixed work however small it is: a message through
//! openraft's core, a log write and its sync on every member, a place in a replication
//! message, an apply and its synced row write. A [`Batcher`] writes requests as they
//! come while few writes are in flight, so one client waits no longer than it did
//! alone; once [`WRITES_IN_FLIGHT_MAX`] entries are in flight, what arrives meanwhile
//! waits and goes out together, as one [`Command::Batch`] of at most
//! [`BATCH_REQUESTS_MAX`] requests and [`BATCH_BYTES_MAX`] bytes. The state machine
//! applies a batch's requests one after the other, each exactly as if it were an entry
//! of its own, and each caller gets its own answer.

use crate::limits::{BATCH_BYTES_MAX, BATCH_REQUESTS_MAX};
use crate::state::command::{Command, Outcome, Request, Response};
use crate::{Applied, Error, LogId, Raft};
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

/// Entries the batcher has in flight at once; requests that arrive while all are
/// taken form the next batch.
pub const WRITES_IN_FLIGHT_MAX: usize = 8;
/// Requests waiting for the batcher; a caller beyond that waits to be queued.
pub const QUEUED_MAX: usize = 4 * BATCH_REQUESTS_MAX;

struct Queued {
    request: Request,
    len: usize,
    reply: oneshot::Sender<Result<Applied, Error>>,
}

/// Writes requests through one member's Raft, several to an entry under load. Cheap
/// to clone; the batching task stops when the last clone is dropped.
#[derive(Clone)]
pub struct Batcher {
    raft: Raft,
    queue: mpsc::Sender<Queued>,
}

impl Batcher {
    /// Starts the batching task on the current tokio runtime. `actor` signs the
    /// batches themselves (the member's own `agent:<host>`); each request keeps its own.
    pub fn start(raft: Raft, actor: String) -> Self {
        let (queue, rx) = mpsc::channel(QUEUED_MAX);
        tokio::spawn(batch_loop(raft.clone(), actor, rx));
        Self { raft, queue }
    }

    /// [`crate::propose`], sharing an entry with the requests that arrive meanwhile.
    pub async fn propose(&self, request: Request) -> Result<Applied, Error> {
        if matches!(request.command, Command::Batch { .. }) {
            return Err(Error::Rejected(crate::Rejection::new(
                crate::RejectCode::InvalidRequest,
                String::from("a batch is formed by the leader's batcher only"),
            )));
        }
        let len = request.validated_len()?;
        if len > BATCH_BYTES_MAX {
            return write_one(&self.raft, request).await;
        }
        let (reply, answer) = oneshot::channel();
        let stopped = || Error::Unavailable("this member's write batcher has stopped".into());
        self.queue.send(Queued { request, len, reply }).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

impl std::fmt::Debug for Batcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher").field("queued", &(QUEUED_MAX - self.queue.capacity())).finish()
    }
}

async fn batch_loop(raft: Raft, actor: String, mut rx: mpsc::Receiver<Queued>) {
    let in_flight = Arc::new(Semaphore::new(WRITES_IN_FLIGHT_MAX));
    let mut carried: Option<Queued> = None;
    loop {
        let first = match carried.take() {
            Some(q) => q,
            None => match rx.recv().await {
                Some(q) => q,
                None => return, // every Batcher is gone
            },
        };
        // Waiting for a free slot is what lets a batch form.
        let Ok(permit) = Arc::clone(&in_flight).acquire_owned().await else { return };
        let mut bytes = first.len;
        let mut batch = vec![first];
        while batch.len() < BATCH_REQUESTS_MAX {
            match rx.try_recv() {
                Ok(q) if bytes + q.len <= BATCH_BYTES_MAX => {
                    bytes += q.len;
                    batch.push(q);
                }
                Ok(q) => {
                    carried = Some(q);
                    break;
                }
                Err(_) => break,
            }
        }
        tokio::spawn(write_batch(raft.clone(), actor.clone(), batch, permit));
    }
}

async fn write_batch(raft: Raft, actor: String, mut batch: Vec<Queued>, _slot: OwnedSemaphorePermit) {
    if batch.len() == 1 {
        let q = batch.pop().expect("one request");
        let _ = q.reply.send(write_one(&raft, q.request).await);
        return;
    }
    let (requests, replies): (Vec<Request>, Vec<_>) = batch.into_iter().map(|q| (q.request, q.reply)).unzip();
    let request = Request {
        proposed_at_ms: requests.iter().map(|r| r.proposed_at_ms).max().unwrap_or_default(),
        actor,
        from: String::new(),
        command: Command::Batch { requests },
    };
    match write_one(&raft, request).await {
        Ok(Applied { log_id, outcome: Outcome::Batch { responses } }) if responses.len() == replies.len() => {
            for (reply, response) in replies.into_iter().zip(responses) {
                let _ = reply.send(answer(log_id, response));
            }
        }
        Ok(other) => {
            let e = Error::Unavailable(format!("a batch of {} requests was answered {other:?}", replies.len()));
            replies.into_iter().for_each(|r| drop(r.send(Err(e.clone()))));
        }
        Err(e) => replies.into_iter().for_each(|r| drop(r.send(Err(e.clone())))),
    }
}

fn answer(log_id: LogId, response: Response) -> Result<Applied, Error> {
    response.map(|outcome| Applied { log_id, outcome }).map_err(Error::Rejected)
}

/// One entry through Raft, already validated.
async fn write_one(raft: &Raft, request: Request) -> Result<Applied, Error> {
    use openraft::error::{ClientWriteError, RaftError};
    match raft.client_write(request).await {
        Ok(written) => answer(written.log_id, written.data),
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
            Err(Error::NotLeader { leader: f.leader_id, address: f.leader_node.map(|n| n.addr) })
        }
        Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => Err(Error::Unavailable(e.to_string())),
        Err(RaftError::Fatal(f)) => Err(Error::Unavailable(f.to_string())),
    }
}

pub(crate) async fn propose(raft: &Raft, request: Request) -> Result<Applied, Error> {
    request.validate()?;
    write_one(raft, request).await
}
