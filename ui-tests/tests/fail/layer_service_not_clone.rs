use std::task::{Context, Poll};

use rustmq::typed::{BoxError, Delivery, Settlement};
use rustmq::{RustMqClient, Service};

/// A layer's service that cannot be cloned: the runner clones the layered service for every
/// message, so `Service::layer` refuses it.
struct Counting<S> {
    inner: S,
    seen: u64,
}

impl<S> tower::Service<Delivery> for Counting<S>
where
    S: tower::Service<Delivery, Response = Settlement, Error = BoxError>,
{
    type Response = Settlement;
    type Error = BoxError;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, delivery: Delivery) -> S::Future {
        self.seen += 1;
        self.inner.call(delivery)
    }
}

struct CountingLayer;

impl<S> tower::Layer<S> for CountingLayer {
    type Service = Counting<S>;

    fn layer(&self, inner: S) -> Counting<S> {
        Counting { inner, seen: 0 }
    }
}

fn wire(client: RustMqClient) {
    let _ = Service::new(client).layer(CountingLayer);
}

fn main() {}
