import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A fixed pool of worker threads created once; the calling thread takes part in the work.
///
/// Built for many short jobs (a decode step dispatches ~150 matmuls of tens of microseconds each):
/// idle workers spin on an atomic generation counter for a while before sleeping on a condition
/// variable, so back-to-back jobs start without a kernel round trip. Tasks are handed out one at a
/// time from an atomic counter, so a descheduled worker delays a job by one task, not by a share.
///
/// One job runs at a time: `run` must not be called concurrently or from inside a task.
public final class ThreadPool: @unchecked Sendable {
    public let threadCount: Int
    private let state: PoolState
    private var threads: [pthread_t] = []

    /// - Parameters:
    ///   - threadCount: threads taking part in each job, the caller included (1 = run inline).
    ///   - spinIterations: polls of the job counter an idle worker makes before it sleeps.
    public init(threadCount: Int, spinIterations: Int = 200_000) {
        precondition(threadCount >= 1, "a thread pool needs at least one thread, got \(threadCount)")
        self.threadCount = threadCount
        state = PoolState(threadCount: threadCount, spinIterations: spinIterations)
        for index in 1..<threadCount {
            let context = Unmanaged.passRetained(WorkerContext(state: state, index: index)).toOpaque()
            #if canImport(Glibc)
            var thread = pthread_t()
            let status = pthread_create(&thread, nil, { argument in
                let context = Unmanaged<WorkerContext>.fromOpaque(argument!).takeRetainedValue()
                context.state.workerLoop(index: context.index)
                return nil
            }, context)
            precondition(status == 0, "pthread_create failed: \(status)")
            threads.append(thread)
            #else
            var thread: pthread_t?
            let status = pthread_create(&thread, nil, { argument in
                let context = Unmanaged<WorkerContext>.fromOpaque(argument).takeRetainedValue()
                context.state.workerLoop(index: context.index)
                return nil
            }, context)
            precondition(status == 0 && thread != nil, "pthread_create failed: \(status)")
            threads.append(thread!)
            #endif
        }
    }

    deinit {
        state.stop()
        for thread in threads { pthread_join(thread, nil) }
    }

    /// Calls `body(task)` for every task in `0..<taskCount` across the pool; returns when all are done.
    public func run(taskCount: Int, _ body: (Int) -> Void) {
        runWithThreadIndex(taskCount: taskCount) { task, _ in body(task) }
    }

    /// As `run`, also passing the index (0..<threadCount) of the thread running the task; the
    /// caller is thread 0. Lets a task use that thread's scratch memory.
    func runWithThreadIndex(taskCount: Int, _ body: (_ task: Int, _ thread: Int) -> Void) {
        guard taskCount > 0 else { return }
        if threadCount == 1 || taskCount == 1 {
            for task in 0..<taskCount { body(task, 0) }
            return
        }
        state.beginJob()
        withoutActuallyEscaping(body) { escapable in
            state.dispatch(taskCount: taskCount, body: escapable)
        }
        state.endJob()
    }

    /// Scratch memory private to thread `thread` (valid until the next call for the same thread
    /// with a larger size). Slot `threadCount` is a shared slot for the caller to fill before a
    /// job and tasks to read during it. 64-byte aligned; contents are undefined.
    func scratch(thread: Int, bytes: Int) -> UnsafeMutableRawPointer {
        state.scratch(slot: thread, bytes: bytes)
    }
}

private final class WorkerContext {
    let state: PoolState
    let index: Int
    init(state: PoolState, index: Int) {
        self.state = state
        self.index = index
    }
}

/// The state shared by the pool's threads. A separate object from `ThreadPool` so that workers do
/// not keep the pool alive: the pool's deinit stops and joins them.
///
/// A job is published as one atomic word, `generation << 40 | task count << 20 | next task`. A
/// thread claims a task by compare-and-swap on that word, so a claim can only succeed while its job
/// is still open (the count travels in the word: a worker that read the previous job's word must
/// not judge it against the next job's count, which once let it claim a task twice), and the
/// caller waits for the count of finished tasks, not for every worker to show up: a worker that is
/// descheduled (2 cores shared with other processes) costs nothing unless it holds a task.
private final class PoolState: @unchecked Sendable {
    typealias Body = (_ task: Int, _ thread: Int) -> Void

    let threadCount: Int
    let spinIterations: Int
    /// `generation << 40 | task count << 20 | index of the next unclaimed task`.
    let word = Atomic<UInt64>(0)
    static let fieldBits: UInt64 = 20
    static let fieldMask: UInt64 = (1 << 20) - 1
    static let generationMask: UInt64 = (1 << 24) - 1
    /// Tasks of the current job that have finished.
    let done = Atomic<Int>(0)
    /// Workers asleep (or about to sleep) on `condition`.
    let sleepers = Atomic<Int>(0)
    let stopping = Atomic<Bool>(false)
    let busy = Atomic<Bool>(false)
    // Written by the caller before it publishes a job's generation (release) and read by threads
    // holding a claim of that job, which the caller outlives (it waits for every task to finish).
    nonisolated(unsafe) var body: Body?
    nonisolated(unsafe) var generation: UInt64 = 0
    let mutex: UnsafeMutablePointer<pthread_mutex_t>
    let condition: UnsafeMutablePointer<pthread_cond_t>
    let slots: UnsafeMutablePointer<(pointer: UnsafeMutableRawPointer?, bytes: Int)>

    init(threadCount: Int, spinIterations: Int) {
        self.threadCount = threadCount
        self.spinIterations = spinIterations
        mutex = .allocate(capacity: 1)
        condition = .allocate(capacity: 1)
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(condition, nil)
        slots = .allocate(capacity: threadCount + 1)
        slots.initialize(repeating: (nil, 0), count: threadCount + 1)
    }

    deinit {
        for i in 0...threadCount { slots[i].pointer?.deallocate() }
        slots.deallocate()
        pthread_cond_destroy(condition)
        pthread_mutex_destroy(mutex)
        condition.deallocate()
        mutex.deallocate()
    }

    func beginJob() {
        let wasBusy = busy.exchange(true, ordering: .acquiring)
        precondition(!wasBusy, "ThreadPool.run called while another job is running")
    }

    func endJob() {
        busy.store(false, ordering: .releasing)
    }

    func dispatch(taskCount: Int, body: @escaping Body) {
        precondition(UInt64(taskCount) <= Self.fieldMask, "too many tasks: \(taskCount)")
        self.body = body
        done.store(0, ordering: .relaxed)
        generation = (generation + 1) & Self.generationMask
        // Sequentially consistent with the sleepers check below and in `workerLoop`: either the
        // worker sees the new generation, or this thread sees it asleep and signals it.
        word.store(generation << 40 | UInt64(taskCount) << Self.fieldBits, ordering: .sequentiallyConsistent)
        if sleepers.load(ordering: .sequentiallyConsistent) > 0 { wakeAll() }
        work(generation: generation, thread: 0)
        var polls = 0
        while done.load(ordering: .acquiring) < taskCount {
            polls += 1
            if polls > 1 << 14 { sched_yield() }
        }
        self.body = nil
    }

    func stop() {
        stopping.store(true, ordering: .relaxed)
        generation = (generation + 1) & Self.generationMask
        word.store(generation << 40, ordering: .sequentiallyConsistent)
        wakeAll()
    }

    private func wakeAll() {
        pthread_mutex_lock(mutex)
        pthread_cond_broadcast(condition)
        pthread_mutex_unlock(mutex)
    }

    /// Claims and runs tasks of job `generation` until none are left.
    private func work(generation: UInt64, thread: Int) {
        var current = word.load(ordering: .acquiring)
        while true {
            guard current >> 40 == generation else { return }
            let task = current & Self.fieldMask
            guard task < (current >> Self.fieldBits) & Self.fieldMask else { return }
            let (claimed, found) = word.compareExchange(
                expected: current, desired: current + 1, ordering: .acquiringAndReleasing)
            if !claimed {
                current = found
                continue
            }
            body.unsafelyUnwrapped(Int(task), thread)
            done.add(1, ordering: .releasing)
            current = word.load(ordering: .acquiring)
        }
    }

    func workerLoop(index: Int) {
        var seen: UInt64 = 0
        while true {
            var current = word.load(ordering: .acquiring) >> 40
            var polls = 0
            while current == seen && polls < spinIterations {
                polls += 1
                current = word.load(ordering: .acquiring) >> 40
            }
            if current == seen {
                pthread_mutex_lock(mutex)
                sleepers.add(1, ordering: .sequentiallyConsistent)
                current = word.load(ordering: .sequentiallyConsistent) >> 40
                while current == seen {
                    pthread_cond_wait(condition, mutex)
                    current = word.load(ordering: .sequentiallyConsistent) >> 40
                }
                sleepers.subtract(1, ordering: .sequentiallyConsistent)
                pthread_mutex_unlock(mutex)
            }
            seen = current
            if stopping.load(ordering: .relaxed) { return }
            work(generation: current, thread: index)
        }
    }

    func scratch(slot: Int, bytes: Int) -> UnsafeMutableRawPointer {
        precondition(slot >= 0 && slot <= threadCount, "scratch slot \(slot) outside 0...\(threadCount)")
        if let pointer = slots[slot].pointer, slots[slot].bytes >= bytes { return pointer }
        slots[slot].pointer?.deallocate()
        // Grow geometrically so a slowly growing n does not reallocate every call.
        let size = max(bytes, 2 * slots[slot].bytes, 4096)
        let pointer = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 64)
        slots[slot] = (pointer, size)
        return pointer
    }
}
