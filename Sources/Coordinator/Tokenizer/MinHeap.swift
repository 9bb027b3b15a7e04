/// A binary min-heap: the merge queues of both BPE models. Elements order themselves through
/// `Comparable` (the best merge is the smallest element).
struct MinHeap<Element: Comparable> {
    private var items: [Element] = []

    init() {}

    var isEmpty: Bool { items.isEmpty }

    mutating func reserveCapacity(_ n: Int) { items.reserveCapacity(n) }

    mutating func push(_ element: Element) {
        items.append(element)
        var child = items.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard items[child] < items[parent] else { break }
            items.swapAt(child, parent)
            child = parent
        }
    }

    mutating func pop() -> Element? {
        guard !items.isEmpty else { return nil }
        let top = items[0]
        let last = items.removeLast()
        if !items.isEmpty {
            items[0] = last
            var parent = 0
            while true {
                let left = 2 * parent + 1, right = left + 1
                var smallest = parent
                if left < items.count && items[left] < items[smallest] { smallest = left }
                if right < items.count && items[right] < items[smallest] { smallest = right }
                if smallest == parent { break }
                items.swapAt(parent, smallest)
                parent = smallest
            }
        }
        return top
    }
}
