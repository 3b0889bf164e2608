/* Thrift framed-transport parser for KCM, as in the kernel's
 * Documentation/networking/kcm.rst: the frame size (u32, network byte order)
 * plus its own 4 bytes. Build (only needed to regenerate thrift.o):
 *   clang -O2 -target bpf -c thrift.c -o thrift.o
 */
unsigned long long load_word(void *skb, unsigned long long off) asm("llvm.bpf.load.word");

struct __sk_buff;

__attribute__((section("socket_kcm"), used))
int bpf_prog1(struct __sk_buff *skb)
{
	return load_word(skb, 0) + 4;
}

char _license[] __attribute__((section("license"), used)) = "GPL";
