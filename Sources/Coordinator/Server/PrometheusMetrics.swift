import Metrics
import Prometheus

/// The server's metrics backend: everything recorded through swift-metrics (the engine's counters,
/// gauges and step timers, the HTTP layer's request counter) lands in one Prometheus registry,
/// which `GET /metrics` prints in Prometheus's text format.
public struct PrometheusMetrics: Sendable {
    let registry: PrometheusCollectorRegistry

    /// Everything recorded so far, in Prometheus's text exposition format.
    public func text() -> String { registry.emitToString() }

    /// Makes swift-metrics record into a new Prometheus registry and returns it. Call once per
    /// process (swift-metrics allows one bootstrap), before the engine is created: metrics made
    /// before the bootstrap go nowhere.
    ///
    /// Timers become histograms in seconds, with buckets around what they measure on CPUs: a
    /// collective step takes milliseconds to a second, an allreduce tens of microseconds to tens
    /// of milliseconds (swift-prometheus's default buckets start at 5 ms and would put every
    /// allreduce in the first one).
    public static func bootstrap() -> PrometheusMetrics {
        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.durationHistogramBuckets = [
            "medusa_step_seconds": [1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500].map { Duration.microseconds($0 * 1000) },
            "medusa_allreduce_seconds": [25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000, 100_000].map { Duration.microseconds($0) },
        ]
        MetricsSystem.bootstrap(factory)
        return PrometheusMetrics(registry: registry)
    }
}

/// Counts answered HTTP requests by route and status: `medusa_http_requests_total{path, status}`.
struct HTTPRequestCounter: Sendable {
    static let label = "medusa_http_requests_total"

    /// The route the router dispatched to (as Hummingbird spells it: `/v1/models/{id}`; nil or
    /// Hummingbird's "NotFound" when none): anything else is counted as "other", so a client
    /// probing random URLs cannot grow the metric without bound.
    func record(route: String?, status: Int) {
        let routes: Set = ["/health", "/metrics", "/v1/models", "/v1/models/{id}", "/v1/chat/completions", "/v1/completions"]
        let label = route.flatMap { routes.contains($0) ? $0 : nil } ?? "other"
        Counter(label: Self.label, dimensions: [("path", label), ("status", String(status))]).increment()
    }
}
