package targeting

import "math/bits"

// MurmurHash3 x86_32 constants (Austin Appleby, SMHasher's MurmurHash3.cpp).
const (
	murmurC1 = 0xcc9e2d51
	murmurC2 = 0x1b873593
)

// murmur3 returns MurmurHash3 x86_32 with seed of the bytes of a followed by the bytes of b —
// what flagd's fractional operator computes over the concatenation flagKey+value — without
// concatenating them: it streams over a, carries its last 0-3 bytes into b, and allocates nothing.
func murmur3[T string | []byte](seed uint32, a string, b T) uint32 {
	h := seed
	i := 0
	for ; i+4 <= len(a); i += 4 {
		h = murmurBlock(h, uint32(a[i])|uint32(a[i+1])<<8|uint32(a[i+2])<<16|uint32(a[i+3])<<24)
	}
	// The tail of a starts a block that b completes.
	var k uint32
	n := 0
	for ; i < len(a); i++ {
		k |= uint32(a[i]) << (8 * n)
		n++
	}
	j := 0
	if n > 0 {
		for ; n < 4 && j < len(b); j++ {
			k |= uint32(b[j]) << (8 * n)
			n++
		}
		if n == 4 {
			h = murmurBlock(h, k)
			k, n = 0, 0
		}
	}
	if n == 0 {
		for ; j+4 <= len(b); j += 4 {
			h = murmurBlock(h, uint32(b[j])|uint32(b[j+1])<<8|uint32(b[j+2])<<16|uint32(b[j+3])<<24)
		}
		for ; j < len(b); j++ {
			k |= uint32(b[j]) << (8 * n)
			n++
		}
	}
	if n > 0 {
		k *= murmurC1
		k = bits.RotateLeft32(k, 15)
		k *= murmurC2
		h ^= k
	}
	h ^= uint32(len(a) + len(b))
	h ^= h >> 16
	h *= 0x85ebca6b
	h ^= h >> 13
	h *= 0xc2b2ae35
	h ^= h >> 16
	return h
}

// murmurBlock mixes one little-endian 4-byte block into h.
func murmurBlock(h, k uint32) uint32 {
	k *= murmurC1
	k = bits.RotateLeft32(k, 15)
	k *= murmurC2
	h ^= k
	h = bits.RotateLeft32(h, 13)
	return h*5 + 0xe6546b64
}
