//! The pool against silent and scripted brokers.

use rustmq_protocol::PingRequest;

use super::*;
use crate::config::RetryConfig;
use crate::transport::test_broker::{Script, TestBroker};

fn ping() -> Request {
    Request::Ping(PingRequest { nonce: 7 })
}

/// A bound UDP socket that never answers: QUIC handshakes to it never complete.
fn silent_broker() -> std::net::UdpSocket {
    std::net::UdpSocket::bind("127.0.0.1:0").unwrap()
}

/// A client configuration for the silent broker, with long connection attempts and a
/// long backoff after a failed one.
fn config_for_silent(silent: &std::net::UdpSocket) -> ClientConfig {
    ClientConfig {
        brokers: vec![silent.local_addr().unwrap().to_string()],
        connect_timeout: Duration::from_secs(60),
        retry_config: RetryConfig {
            max_retries: 2,
            base_delay: Duration::from_secs(60),
            max_delay: Duration::from_secs(60),
            multiplier: 1.0,
            jitter: false,
        },
        ..ClientConfig::default()
    }
}

#[tokio::test]
async fn an_attempt_cut_off_by_the_request_deadline_backs_off_all_the_same() {
    let silent = silent_broker();
    let pool = Pool::new(&config_for_silent(&silent), "test".into()).unwrap();
    let timeout = Duration::from_millis(100);
    let err = pool.request(&ping(), timeout).await.unwrap_err();
    assert!(matches!(err, ClientError::Timeout { .. }), "{err}");
    assert_eq!(pool.slots[0].state.lock().failures, 1);
    // The broker is backing off: later requests do not start handshakes of their own.
    for _ in 0..3 {
        let err = pool.request(&ping(), timeout).await.unwrap_err();
        assert!(matches!(err, ClientError::NoConnectionsAvailable), "{err}");
    }
    assert_eq!(pool.slots[0].state.lock().failures, 1);
}

#[tokio::test]
async fn closing_wakes_requests_waiting_out_a_backoff() {
    let silent = silent_broker();
    let pool = Arc::new(Pool::new(&config_for_silent(&silent), "test".into()).unwrap());
    pool.slots[0].state.lock().retry_at = Some(Instant::now() + Duration::from_secs(60));
    let request = tokio::spawn({
        let pool = Arc::clone(&pool);
        async move { pool.request(&ping(), Duration::from_secs(120)).await }
    });
    // The request holds the broker's opening lock while it waits out the backoff.
    while pool.slots[0].opening.try_lock().is_ok() {
        tokio::task::yield_now().await;
    }
    pool.close().await;
    let result = tokio::time::timeout(Duration::from_secs(20), request)
        .await
        .expect("the request is woken by close")
        .unwrap();
    assert!(matches!(result, Err(ClientError::Closed)), "{result:?}");
}

#[tokio::test]
async fn durations_past_what_an_instant_holds_mean_no_limit() {
    let broker = TestBroker::start(Script::default()).await;
    let config = ClientConfig {
        brokers: vec![broker.address()],
        ..ClientConfig::default()
    };
    let pool = Arc::new(Pool::new(&config, "test".into()).unwrap());
    pool.connect_initial().await.unwrap();
    pool.request(&ping(), Duration::MAX).await.unwrap();
    let unanswered = pool.write_request(&ping(), Duration::MAX).await.unwrap();
    assert!(matches!(unanswered.answer().await, Ok(Response::Ping(_))));
    let health = spawn_health_task(Arc::downgrade(&pool), Duration::MAX);
    tokio::task::yield_now().await;
    assert!(!health.is_finished(), "the health task panicked");
    health.abort();

    // A failed attempt's backoff of `Duration::MAX`.
    let silent = silent_broker();
    let config = ClientConfig {
        connect_timeout: Duration::from_millis(50),
        retry_config: RetryConfig {
            max_retries: 0,
            base_delay: Duration::MAX,
            max_delay: Duration::MAX,
            ..RetryConfig::default()
        },
        ..config_for_silent(&silent)
    };
    let pool = Pool::new(&config, "test".into()).unwrap();
    assert!(pool
        .request(&ping(), Duration::from_secs(30))
        .await
        .is_err());
    assert!(pool.slots[0].state.lock().retry_at.is_some());
}

#[tokio::test]
async fn requests_stay_on_the_first_broker_that_answers() {
    let first = TestBroker::start(Script::default()).await;
    let second = TestBroker::start(Script::default()).await;
    let config = ClientConfig {
        brokers: vec![first.address(), second.address()],
        ..ClientConfig::default()
    };
    let pool = Pool::new(&config, "test".into()).unwrap();
    pool.connect_initial().await.unwrap();
    // Concurrent requests: with both brokers in use, they would be spread by load.
    let ping = ping();
    let requests = (0..50).map(|_| pool.request(&ping, Duration::from_secs(30)));
    for result in futures::future::join_all(requests).await {
        result.unwrap();
    }
    assert_eq!(first.state.count(rustmq_protocol::ApiKind::Ping), 50);
    assert_eq!(second.state.count(rustmq_protocol::ApiKind::Ping), 0);
    // Both were tried at start; the second's connection (if it was made) is not kept.
    assert!(pool.slots[1].connections.lock().is_empty());
}

/// A client configuration for scripted brokers.
fn config_for(brokers: &[&TestBroker]) -> ClientConfig {
    ClientConfig {
        brokers: brokers.iter().map(|b| b.address()).collect(),
        ..ClientConfig::default()
    }
}

fn hellos(broker: &TestBroker) -> usize {
    broker.state.hellos.load(Ordering::Relaxed)
}

/// A request finding the broker in use backing off for less than its deadline waits for it
/// rather than moving to the next broker.
#[tokio::test]
async fn the_broker_in_use_is_waited_for_when_its_backoff_ends_before_the_deadline() {
    let a = TestBroker::start(Script::default()).await;
    let b = TestBroker::start(Script::default()).await;
    let pool = Pool::new(&config_for(&[&a, &b]), "test".into()).unwrap();
    pool.slots[0].state.lock().retry_at = Some(Instant::now() + Duration::from_millis(50));
    pool.request(&ping(), Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(a.state.count(rustmq_protocol::ApiKind::Ping), 1);
    assert_eq!(hellos(&b), 0);
    assert_eq!(pool.active.load(Ordering::Acquire), 0);
}

/// A ping within 5 s from a pool of two brokers whose first, the one in use, has had
/// `failures` failed attempts and backs off for 50 ms, with a `connect_timeout` of 10 s (an
/// attempt after the backoff would not fit before the deadline): which broker answered, and
/// which one the pool uses after.
async fn ping_past_a_short_backoff(failures: u32) -> (usize, usize) {
    let a = TestBroker::start(Script::default()).await;
    let b = TestBroker::start(Script::default()).await;
    let config = ClientConfig {
        connect_timeout: Duration::from_secs(10),
        ..config_for(&[&a, &b])
    };
    let pool = Pool::new(&config, "test".into()).unwrap();
    {
        let mut state = pool.slots[0].state.lock();
        state.failures = failures;
        state.retry_at = Some(Instant::now() + Duration::from_millis(50));
    }
    pool.request(&ping(), Duration::from_secs(5)).await.unwrap();
    let pinged = |broker: &TestBroker| broker.state.count(rustmq_protocol::ApiKind::Ping) == 1;
    let answered = match (pinged(&a), pinged(&b)) {
        (true, false) => 0,
        (false, true) => 1,
        other => panic!("pings {other:?}"),
    };
    let other = [&b, &a][answered];
    assert_eq!(
        hellos(other),
        0,
        "no attempt at the broker that did not answer"
    );
    (answered, pool.active.load(Ordering::Acquire))
}

/// ... but not when a whole attempt at it (`connect_timeout`) would not fit before the
/// deadline after its backoff: a broker gone silent would take every request's time, leaving
/// none to fail over in.
#[tokio::test]
async fn the_broker_in_use_is_not_waited_for_when_an_attempt_would_not_fit_before_the_deadline() {
    assert_eq!(ping_past_a_short_backoff(1).await, (1, 1));
}

/// ... unless it never failed: only paced (an attempt its caller abandoned), nothing says it is
/// gone, and the client must not move to another broker (another log, other groups) for that.
#[tokio::test]
async fn a_broker_in_use_that_is_only_paced_is_waited_for() {
    assert_eq!(ping_past_a_short_backoff(0).await, (0, 0));
}

/// The health check reconnects to the broker in use even while it backs off, instead of
/// moving to the next broker.
#[tokio::test]
async fn the_health_check_attempts_the_broker_in_use_while_it_backs_off() {
    let a = TestBroker::start(Script::default()).await;
    let b = TestBroker::start(Script::default()).await;
    let pool = Pool::new(&config_for(&[&a, &b]), "test".into()).unwrap();
    pool.slots[0].state.lock().retry_at = Some(Instant::now() + Duration::from_secs(600));
    let report = pool.check_health().await;
    assert_eq!((report.healthy, report.total), (1, 1));
    assert_eq!(hellos(&a), 1);
    assert_eq!(hellos(&b), 0);
    assert_eq!(pool.active.load(Ordering::Acquire), 0);
}

/// A request dropped by its caller while it connects (a `timeout` around it) tells nothing
/// about the broker: the next attempt is delayed, but the backoff does not grow.
#[tokio::test]
async fn an_attempt_its_caller_abandons_is_no_failure_of_the_brokers() {
    let silent = silent_broker();
    let pool = Pool::new(&config_for_silent(&silent), "test".into()).unwrap();
    let ping = ping();
    let request = pool.request(&ping, Duration::from_secs(30));
    assert!(tokio::time::timeout(Duration::from_millis(100), request)
        .await
        .is_err());
    let state = pool.slots[0].state.lock();
    assert_eq!(state.failures, 0);
    assert!(state.retry_at.is_some(), "the next attempt is paced");
}

/// A request that failed over to the next broker keeps to the broker in use if that one
/// came back meanwhile (another request reconnected to it, and traffic flows on it): moving
/// would cut the requests in flight there.
#[tokio::test]
async fn a_failover_is_called_off_when_the_broker_in_use_came_back() {
    let a = TestBroker::start(Script::default()).await;
    let b = TestBroker::start(Script::default()).await;
    let pool = Pool::new(&config_for(&[&a, &b]), "test".into()).unwrap();
    // `a` backs off past the first request's deadline: it moves on to `b`, whose connection
    // attempt waits while the test holds `b`'s opening lock.
    pool.slots[0].state.lock().retry_at = Some(Instant::now() + Duration::from_secs(600));
    let holding_b = pool.slots[1].opening.lock().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut failing_over = Box::pin(pool.connect_any(deadline));
    assert!(futures::poll!(failing_over.as_mut()).is_pending());
    // `a` is back: another request reconnects to it.
    pool.slots[0].state.lock().retry_at = None;
    pool.request(&ping(), Duration::from_secs(30))
        .await
        .unwrap();
    drop(holding_b);
    let conn = failing_over.await.unwrap();
    assert_eq!(conn.broker(), a.address());
    assert!(!conn.is_closed());
    assert_eq!(pool.active.load(Ordering::Acquire), 0);
    assert_eq!(hellos(&b), 0, "b was not even connected to");
    assert!(pool.slots[1].connections.lock().is_empty());
    pool.request(&ping(), Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(a.state.count(rustmq_protocol::ApiKind::Ping), 2);
    assert_eq!(b.state.count(rustmq_protocol::ApiKind::Ping), 0);
}

/// A failover whose connection is made while the broker in use comes back gives that
/// connection up and stays: moving would cut the requests in flight on the broker in use.
#[tokio::test]
async fn a_switch_is_called_off_when_the_broker_in_use_has_connections_again() {
    let a = TestBroker::start(Script::default()).await;
    let b = TestBroker::start(Script::default()).await;
    let pool = Pool::new(&config_for(&[&a, &b]), "test".into()).unwrap();
    let to_b = Arc::new(
        pool.attempt(&pool.slots[1], None, Pace::Skip)
            .await
            .unwrap(),
    );
    // Meanwhile a request reconnected to `a`.
    pool.request(&ping(), Duration::from_secs(30))
        .await
        .unwrap();
    let kept = pool.register(0, 1, Arc::clone(&to_b)).unwrap();
    assert_eq!(kept.broker(), a.address());
    assert!(to_b.is_closed());
    assert_eq!(pool.active.load(Ordering::Acquire), 0);
    assert!(pool.slots[1].connections.lock().is_empty());
}

/// A connection opened for a broker the pool has moved away from meanwhile is closed, not
/// kept where no request would use (nor drain) it.
#[tokio::test]
async fn a_connection_to_a_broker_no_longer_in_use_is_not_kept() {
    let a = TestBroker::start(Script::default()).await;
    let b = TestBroker::start(Script::default()).await;
    let pool = Pool::new(&config_for(&[&a, &b]), "test".into()).unwrap();
    // What `acquire` does when every connection is busy: a connection to the broker in use,
    // during which another request moves the pool to `b`.
    let conn = Arc::new(
        pool.attempt(&pool.slots[0], None, Pace::Skip)
            .await
            .unwrap(),
    );
    pool.active.store(1, Ordering::Release);
    let err = pool.register(0, 0, Arc::clone(&conn)).unwrap_err();
    assert!(matches!(err, ClientError::NoConnectionsAvailable), "{err}");
    assert!(conn.is_closed());
    assert!(pool.slots[0].connections.lock().is_empty());
    // One begun after the move is not even attempted.
    let err = pool.open(0, 0, None, Pace::Skip).await.unwrap_err();
    assert!(matches!(err, ClientError::NoConnectionsAvailable), "{err}");
    assert_eq!(hellos(&a), 1);
}

/// At start every broker is tried at once: a first broker that does not answer does not
/// hold up the attempt at the second.
#[tokio::test]
async fn every_broker_is_tried_at_once_at_start() {
    let silent = silent_broker();
    let live = TestBroker::start(Script::default()).await;
    let config = ClientConfig {
        brokers: vec![silent.local_addr().unwrap().to_string(), live.address()],
        connect_timeout: Duration::from_secs(60),
        ..ClientConfig::default()
    };
    let pool = Arc::new(Pool::new(&config, "test".into()).unwrap());
    let starting = tokio::spawn({
        let pool = Arc::clone(&pool);
        async move { pool.connect_initial().await }
    });
    // Tried in turn, the second broker would hear from the client only after 60 s.
    tokio::time::timeout(Duration::from_secs(20), async {
        while hellos(&live) == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the second broker is tried while the first has not answered");
    starting.abort();

    // The first broker that answers is used once the brokers before it have failed.
    let config = ClientConfig {
        connect_timeout: Duration::from_millis(300),
        ..config
    };
    let pool = Pool::new(&config, "test".into()).unwrap();
    pool.connect_initial().await.unwrap();
    assert_eq!(pool.active.load(Ordering::Acquire), 1);
    assert_eq!(pool.slots[1].connections.lock().len(), 1);

    // A live first broker wins; the other's connection (if made) is closed and dropped.
    let a = TestBroker::start(Script::default()).await;
    let pool = Pool::new(&config_for(&[&a, &live]), "test".into()).unwrap();
    pool.connect_initial().await.unwrap();
    assert_eq!(pool.active.load(Ordering::Acquire), 0);
    assert_eq!(pool.slots[0].connections.lock().len(), 1);
    assert!(pool.slots[1].connections.lock().is_empty());
}
