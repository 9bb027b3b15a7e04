/// How the quantized formats' kernels take the activations (`--matmul-inputs`). F32, F16 and BF16
/// weights always multiply exact fp32 activations.
public enum MatMulInputs: String, Sendable, CaseIterable, Codable {
    /// Exact fp32 activations FMA'd with the decoded weights (`BlockKernels` for Q8_0/Q4_0/Q4_1,
    /// a dequantized row times each input for the other formats): matches an fp32 forward.
    case fp32
    /// Activations rounded to int16 per 32-value block, integer products (`Int16BlockKernels`):
    /// faster; a relative error of at most 2^-16 of each block's largest activation.
    case int16
    /// Activations rounded to int8 per 32-value block, as llama.cpp does (`Int8BlockKernels`): one
    /// integer instruction per block on AVX-512 VNNI CPUs; a rounding step of max|x| / 127 per block.
    case int8
}

/// Multiplies activation rows by a weight matrix: the one kernel entry point of the forward pass.
public enum MatMul {
    /// `y[i * yStride + r] = sum_c x[i * xStride + c] * W[r, c]` for i in 0..<n, r in 0..<w.rows.
    ///
    /// Output rows are split across `pool`. Each output value is computed by one thread with the same
    /// operations in the same order whatever `n` and the split are (batch invariance). `inputs`
    /// chooses the block formats' kernel (exact fp32 unless asked).
    public static func multiply(
        _ w: WeightMatrix, x: UnsafePointer<Float>, xStride: Int, n: Int,
        y: UnsafeMutablePointer<Float>, yStride: Int, pool: ThreadPool, inputs: MatMulInputs = .fp32
    ) {
        precondition(n >= 0 && xStride >= w.columns && (n <= 1 || yStride >= w.rows), "bad strides")
        guard n > 0, w.rows > 0 else { return }
        if hasBlockKernel(w.type, inputs) {
            blockMultiply(Products(Product(w, y: y, yStride: yStride)), x: x, xStride: xStride, n: n, pool: pool,
                          inputs: inputs)
            return
        }
        let chunk = rowsPerTask(rows: w.rows, threads: pool.threadCount)
        let tasks = (w.rows + chunk - 1) / chunk
        pool.runWithThreadIndex(taskCount: tasks) { task, thread in
            let rows = task * chunk..<min(w.rows, (task + 1) * chunk)
            let scratch = pool.scratch(thread: thread, bytes: 4 * w.columns).assumingMemoryBound(to: Float.self)
            for r in rows {
                Dequantize.row(w.type, w.row(r), firstColumn: w.firstColumn, count: w.columns, into: scratch)
                for i in 0..<n {
                    y[i * yStride + r] = FloatDot.dot(scratch, x + i * xStride, count: w.columns)
                }
            }
        }
    }

    /// One weight matrix and where its product goes: `y[i * yStride + r]`.
    public struct Product {
        public let weights: WeightMatrix
        public let y: UnsafeMutablePointer<Float>
        public let yStride: Int

        public init(_ weights: WeightMatrix, y: UnsafeMutablePointer<Float>, yStride: Int) {
            self.weights = weights
            self.y = y
            self.yStride = yStride
        }
    }

    /// One to three products of the same inputs, held inline (no allocation on the hot path).
    public struct Products {
        public let first: Product
        let second: Product?
        let third: Product?

        public init(_ first: Product, _ second: Product? = nil, _ third: Product? = nil) {
            precondition(second != nil || third == nil)
            self.first = first
            self.second = second
            self.third = third
        }

        var count: Int { third != nil ? 3 : (second != nil ? 2 : 1) }

        subscript(k: Int) -> Product {
            k == 0 ? first : (k == 1 ? second.unsafelyUnwrapped : third.unsafelyUnwrapped)
        }
    }

    /// Several products of the same inputs (`x` [n, columns], as in `multiply`) in one pool job when
    /// the matrices share a block format and width (QKV, gate and up); one job each otherwise. Each
    /// output value is computed exactly as `multiply` computes it.
    public static func multiply(
        _ products: Products, x: UnsafePointer<Float>, xStride: Int, n: Int, pool: ThreadPool,
        inputs: MatMulInputs = .fp32
    ) {
        let type = products.first.weights.type, columns = products.first.weights.columns
        // The C integer kernels prepare the inputs once for any mix of quantized types (Q4_K_M
        // files mix Q4_K and Q6_K in QKV); the Swift kernels take one type per job.
        let mixes = inputs != .fp32 && IntegerKernels.readsPacked(products, variant: IntegerKernels.variant)
        let fusable = hasBlockKernel(type, inputs) && n > 0
            && (0..<products.count).allSatisfy {
                let w = products[$0].weights
                return (w.type == type || (mixes && hasBlockKernel(w.type, inputs))) && w.columns == columns && w.rows > 0
                    && xStride >= columns && (n <= 1 || products[$0].yStride >= w.rows)
            }
        if fusable {
            blockMultiply(products, x: x, xStride: xStride, n: n, pool: pool, inputs: inputs)
        } else {
            for k in 0..<products.count {
                let p = products[k]
                multiply(p.weights, x: x, xStride: xStride, n: n, y: p.y, yStride: p.yStride, pool: pool, inputs: inputs)
            }
        }
    }

    /// Whether `type` with `inputs` goes through a block kernel (else: each row dequantized once,
    /// then dotted with every input).
    static func hasBlockKernel(_ type: TensorType, _ inputs: MatMulInputs) -> Bool {
        inputs == .fp32 ? BlockKernels.handles(type) : IntegerKernels.handles(type)
    }

    private static func blockMultiply(
        _ products: Products, x: UnsafePointer<Float>, xStride: Int, n: Int, pool: ThreadPool, inputs: MatMulInputs
    ) {
        switch inputs {
        case .fp32: BlockKernels.multiply(products, x: x, xStride: xStride, n: n, pool: pool)
        case .int16: Int16BlockKernels.multiply(products, x: x, xStride: xStride, n: n, pool: pool)
        case .int8: Int8BlockKernels.multiply(products, x: x, xStride: xStride, n: n, pool: pool)
        }
    }

    /// Runs `body(product, rows)` over every product's rows in chunks of `rowsPerTask`, as one job
    /// of `pool` (task t is a chunk of the product whose range holds it).
    @inline(__always)
    static func forEachChunk(
        _ products: Products, pool: ThreadPool, _ body: (_ product: Product, _ rows: Range<Int>) -> Void
    ) {
        var chunks = (0, 0, 0), firstTask = (0, 0, 0)
        var tasks = 0
        for k in 0..<products.count {
            let rows = products[k].weights.rows
            let chunk = rowsPerTask(rows: rows, threads: pool.threadCount)
            switch k {
            case 0: (chunks.0, firstTask.0) = (chunk, tasks)
            case 1: (chunks.1, firstTask.1) = (chunk, tasks)
            default: (chunks.2, firstTask.2) = (chunk, tasks)
            }
            tasks += (rows + chunk - 1) / chunk
        }
        pool.run(taskCount: tasks) { task in
            let k = products.count > 2 && task >= firstTask.2 ? 2 : (products.count > 1 && task >= firstTask.1 ? 1 : 0)
            let (chunk, first) = k == 0 ? (chunks.0, firstTask.0) : (k == 1 ? (chunks.1, firstTask.1) : (chunks.2, firstTask.2))
            let product = products[k]
            body(product, (task - first) * chunk..<min(product.weights.rows, (task - first + 1) * chunk))
        }
    }

    /// Rows per task: a few tasks per thread for load balance, none too small to be worth a dispatch;
    /// a multiple of 16, so tasks start on the VNNI kernels' 16-row tiles.
    static func rowsPerTask(rows: Int, threads: Int) -> Int {
        guard threads > 1 else { return rows }
        let target = (rows + 4 * threads - 1) / (4 * threads)
        return max(16, (target + 15) / 16 * 16)
    }
}

/// fp32 dot products with one fixed summation order.
enum FloatDot {
    /// Four 8-lane accumulators over 32-value steps, then 8-value steps into the first, then a scalar
    /// tail; the lanes are combined in `SIMDSupport.sum`'s order and the tail added last.
    @inline(__always)
    static func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, count: Int) -> Float {
        var acc0 = SIMD8<Float>(), acc1 = SIMD8<Float>(), acc2 = SIMD8<Float>(), acc3 = SIMD8<Float>()
        var c = 0
        while c + 32 <= count {
            acc0.addProduct(SIMDSupport.load8(a + c), SIMDSupport.load8(b + c))
            acc1.addProduct(SIMDSupport.load8(a + c + 8), SIMDSupport.load8(b + c + 8))
            acc2.addProduct(SIMDSupport.load8(a + c + 16), SIMDSupport.load8(b + c + 16))
            acc3.addProduct(SIMDSupport.load8(a + c + 24), SIMDSupport.load8(b + c + 24))
            c += 32
        }
        while c + 8 <= count {
            acc0.addProduct(SIMDSupport.load8(a + c), SIMDSupport.load8(b + c))
            c += 8
        }
        var tail: Float = 0
        while c < count {
            tail.addProduct(a[c], b[c])
            c += 1
        }
        return SIMDSupport.sum((acc0 + acc1) + (acc2 + acc3)) + tail
    }
}
