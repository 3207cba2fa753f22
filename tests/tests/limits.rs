//! End to end: every gRPC service of a real `ternd` takes messages up to
//! `tern_agent::limits::GRPC_MESSAGE_BYTES_MAX` (above tonic's 4 MiB default) and
//! refuses larger ones with OUT_OF_RANGE before any handler runs.

use tern_agent::limits::GRPC_MESSAGE_BYTES_MAX;
use tern_tests::Cluster;
use tonic::Code;
use tonic::codegen::http::uri::PathAndQuery;
use tonic_prost::ProstCodec;

/// Any request, padded with a field no service knows: protobuf skips it, so each
/// method sees its request with default fields, while the size limit sees it all.
#[derive(Clone, PartialEq, prost::Message)]
struct Padded {
    #[prost(bytes = "vec", tag = "1000")]
    padding: Vec<u8>,
}

/// Any answer, its fields skipped.
#[derive(Clone, PartialEq, prost::Message)]
struct Anything {}

/// One method of each service, with default fields harmless to send: read-only, or
/// refused for want of a user.
const METHODS: [(&str, bool); 6] = [
    ("/tern.v1.Raft/Vote", false),
    ("/tern.v1.Cluster/Status", false),
    ("/tern.v1.Inventory/ListDomains", false),
    ("/tern.v1.Migration/ListOperations", false),
    ("/tern.v1.Users/ListUsers", false),
    ("/tern.v1.Hosts/Evacuate", true), // server streaming
];

/// Calls `method` with a request of about `bytes`; the status code the agent answered.
async fn call(c: &Cluster, method: &'static str, streaming: bool, bytes: usize) -> Code {
    let mut grpc = tonic::client::Grpc::new(c.stream_channel(0).await);
    grpc.ready().await.expect("channel ready");
    let request = tonic::Request::new(Padded { padding: vec![0x5a; bytes] });
    let path = PathAndQuery::from_static(method);
    let codec = ProstCodec::<Padded, Anything>::default();
    let result = if streaming {
        grpc.server_streaming(request, path, codec).await.map(|_| ())
    } else {
        grpc.unary(request, path, codec).await.map(|_| ())
    };
    result.map_or_else(|s| s.code(), |()| Code::Ok)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_takes_messages_up_to_the_limit_and_refuses_larger_ones() {
    // Goal: the agent's message limit, not tonic's 4 MiB default, is set on all six services.
    let mut c = Cluster::new();
    c.add("m10-1-1", "m10-1-1", &[]);
    c.start(0);
    c.wait_status(0, "a leader", |s| s.leader_id != 0).await;
    let over_default = 5 << 20;
    let over_limit = GRPC_MESSAGE_BYTES_MAX + 1024;
    const _: () = assert!(5 << 20 < GRPC_MESSAGE_BYTES_MAX);
    for (method, streaming) in METHODS {
        let under = call(&c, method, streaming, over_default).await;
        assert!(!matches!(under, Code::OutOfRange | Code::ResourceExhausted), "{method}: 5 MiB refused with {under:?}");
        let over = call(&c, method, streaming, over_limit).await;
        assert_eq!(over, Code::OutOfRange, "{method}: a message over the limit");
    }
}
