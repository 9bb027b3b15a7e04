// swift-tools-version: 6.0
import PackageDescription

// Hot loops are written with Swift SIMD types; let LLVM use the vector units this project's
// machines have (AVX2 + FMA + F16C on x86_64). `-Xcc` options reach Swift's code generator through
// the Clang importer's target options.
#if arch(x86_64)
let simdFlags: [SwiftSetting] = [.unsafeFlags(["-Xcc", "-mavx2", "-Xcc", "-mfma", "-Xcc", "-mf16c"])]
#else
let simdFlags: [SwiftSetting] = []
#endif

let package = Package(
    name: "medusa-tp",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "medusa-worker", targets: ["medusa-worker"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        // The HTTP server (Coordinator/Server) and what it names of Hummingbird's own dependencies.
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-extras", from: "1.34.1"),
    ],
    targets: [
        // System libraries, found through pkg-config.
        .systemLibrary(
            name: "CMPI", path: "Sources/CMPI", pkgConfig: "ompi-c",
            providers: [.apt(["libopenmpi-dev", "openmpi-bin"])]),
        .systemLibrary(
            name: "COpenBLAS", path: "Sources/COpenBLAS", pkgConfig: "openblas",
            providers: [.apt(["libopenblas-dev"])]),

        // Process group and collective communication. The only module that imports MPI.
        .target(name: "Collectives", dependencies: ["CMPI"]),
        // Kernels that pick an instruction set at run time (AVX-512 VNNI), which Swift cannot enable
        // per function: C with per-function target attributes and a CPUID check. fp contraction
        // off: every variant must round the same operations the same way.
        .target(name: "CKernels", cSettings: [.unsafeFlags(["-O3", "-ffp-contract=off"])]),
        // Model, weight files, kernels, KV cache, forward pass.
        .target(
            name: "Worker", dependencies: ["Collectives", "COpenBLAS", "CKernels"],
            swiftSettings: simdFlags),
        // Medusa heads, candidate tree, acceptance, and the heads' training.
        .target(name: "Medusa", dependencies: ["Worker", "COpenBLAS"], swiftSettings: simdFlags),
        // Tokenizer, chat templates, generation loops, and the OpenAI-compatible HTTP server on rank 0.
        .target(
            name: "Coordinator",
            dependencies: [
                "Worker", "Medusa", "Collectives", .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                // The server's HTTP/1 pipeline (Server/HTTPConnection.swift), as Hummingbird builds it.
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                .product(name: "NIOHTTPTypesHTTP1", package: "swift-nio-extras"),
            ]),
        .executableTarget(
            name: "medusa-worker",
            dependencies: [
                "Coordinator", "Worker", "Collectives",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]),

        // Synthetic models and helpers shared by the test targets.
        .target(name: "TestSupport", dependencies: ["Worker", "Medusa"], path: "Tests/TestSupport"),
        // The rank-side program of the multi-process Collectives tests, launched under `mpirun` by
        // CollectivesTests (built by `swift build --build-tests`; not a product).
        .executableTarget(name: "collectives-check", dependencies: ["Collectives"], path: "Tests/CollectivesCheck"),
        .testTarget(name: "CollectivesTests", dependencies: ["Collectives", "TestSupport"]),
        .testTarget(name: "WorkerTests", dependencies: ["Worker", "Medusa", "TestSupport"], swiftSettings: simdFlags),
        .testTarget(name: "CoordinatorTests", dependencies: ["Coordinator", "Worker", "Medusa", "TestSupport"]),
        .testTarget(name: "CLITests", dependencies: ["Worker", "Medusa", "Coordinator", "TestSupport"]),
    ]
)
