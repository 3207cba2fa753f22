//! Model values inside protobuf messages: a version byte, then JSON. The model is the
//! schema; the version lets a newer agent refuse (or upgrade) what it cannot read.

use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::Status;

pub const VERSION: u8 = 1;
/// The largest embedded value accepted (a server of thousands of cores fits easily).
pub const BYTES_MAX: usize = 8 * 1024 * 1024;

pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, Status> {
    let mut out = vec![VERSION];
    serde_json::to_writer(&mut out, value).map_err(|e| Status::internal(format!("encoding: {e}")))?;
    Ok(out)
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, Status> {
    if bytes.len() > BYTES_MAX {
        return Err(Status::invalid_argument(format!("{what}: {} bytes exceeds {BYTES_MAX}", bytes.len())));
    }
    match bytes.split_first() {
        Some((&VERSION, body)) => {
            serde_json::from_slice(body).map_err(|e| Status::invalid_argument(format!("{what}: {e}")))
        }
        Some((v, _)) => Err(Status::invalid_argument(format!("{what}: encoding version {v} is not supported"))),
        None => Err(Status::invalid_argument(format!("{what}: empty"))),
    }
}
