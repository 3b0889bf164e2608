/* memcached binary-protocol parser for KCM using bpf_skb_load_bytes (helper
 * 26) and skb->len, to exercise those paths. Build:
 *   clang -O2 -target bpf -c memcached.c -o memcached.o
 */
struct __sk_buff {
	unsigned int len;
};

static long (*bpf_skb_load_bytes)(const void *skb, unsigned int off, void *to,
				  unsigned int len) = (void *)26;

__attribute__((section("sk_skb/stream_parser"), used))
int memcached_parser(struct __sk_buff *skb)
{
	unsigned char hdr[12];

	if (skb->len < 24)
		return 0; /* need more */
	if (bpf_skb_load_bytes(skb, 0, hdr, sizeof(hdr)) < 0)
		return -14; /* -EFAULT */
	if (hdr[0] != 0x80 && hdr[0] != 0x81)
		return -74; /* -EBADMSG */
	return 24 + (((unsigned int)hdr[8] << 24) | ((unsigned int)hdr[9] << 16) |
		     ((unsigned int)hdr[10] << 8) | hdr[11]);
}

char _license[] __attribute__((section("license"), used)) = "GPL";
