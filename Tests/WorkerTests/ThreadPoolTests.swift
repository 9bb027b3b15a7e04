import Synchronization
import Testing
@testable import Worker

private final class Counter: Sendable {
    let value = Atomic<Int>(0)
}

@Suite("ThreadPool")
struct ThreadPoolTests {
    @Test("every task runs exactly once, over many calls", arguments: [1, 2, 3, 5])
    func exactlyOnce(threads: Int) {
        let pool = ThreadPool(threadCount: threads)
        let counters = (0..<200).map { _ in Counter() }
        var rng = SplitMix64(seed: UInt64(threads))
        var expected = [Int](repeating: 0, count: 200)
        for _ in 0..<3000 {
            let count = Int.random(in: 0...200, using: &rng)
            pool.run(taskCount: count) { task in
                counters[task].value.add(1, ordering: .relaxed)
            }
            for t in 0..<count { expected[t] += 1 }
        }
        #expect(counters.map { $0.value.load(ordering: .relaxed) } == expected)
    }

    @Test("thread indexes are in range and results are visible after run returns")
    func threadIndexes() {
        let pool = ThreadPool(threadCount: 3)
        let out = UnsafeMutablePointer<Int>.allocate(capacity: 1000)
        defer { out.deallocate() }
        for round in 0..<50 {
            pool.runWithThreadIndex(taskCount: 1000) { task, thread in
                precondition(thread >= 0 && thread < 3)
                out[task] = task * round + thread * 0
            }
            #expect((0..<1000).allSatisfy { out[$0] == $0 * round })
        }
    }

    @Test("workers that went to sleep wake up for the next job")
    func wakeAfterSleep() async throws {
        let pool = ThreadPool(threadCount: 3, spinIterations: 10)
        let counter = Counter()
        for _ in 0..<20 {
            try await Task.sleep(for: .milliseconds(2))
            pool.run(taskCount: 64) { _ in counter.value.add(1, ordering: .relaxed) }
        }
        #expect(counter.value.load(ordering: .relaxed) == 20 * 64)
    }

    @Test("pools are created and destroyed cleanly")
    func lifecycle() {
        let counter = Counter()
        for threads in 1...4 {
            for _ in 0..<10 {
                let pool = ThreadPool(threadCount: threads, spinIterations: 100)
                pool.run(taskCount: 7) { _ in counter.value.add(1, ordering: .relaxed) }
            }
        }
        #expect(counter.value.load(ordering: .relaxed) == 4 * 10 * 7)
    }
}
