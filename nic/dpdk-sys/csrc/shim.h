/* The static inline parts of DPDK that Rust needs, as real functions (Demikernel's
 * inlined.c idea). Everything here is a thin wrapper: no policy, no allocation. */
#ifndef UKCM_DPDK_SHIM_H
#define UKCM_DPDK_SHIM_H

#include <stdint.h>
#include <rte_config.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_lcore.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>
#include <rte_mbuf_pool_ops.h>
#include <rte_memzone.h>
#include <rte_version.h>

/* Where a mbuf's bytes are: the buffer, its length, and the (single) segment's data. */
struct ukcm_mbuf_view {
    void *buf;
    uint16_t buf_len;
    uint16_t data_off;
    uint16_t data_len;
    uint16_t nb_segs;
    uint32_t pkt_len;
};

int ukcm_errno(void);
unsigned ukcm_lcore_id(void);
uint16_t ukcm_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);
uint16_t ukcm_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);
struct rte_mbuf *ukcm_pktmbuf_alloc(struct rte_mempool *mp);
int ukcm_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **mbufs, unsigned n);
void ukcm_pktmbuf_free(struct rte_mbuf *m);
void ukcm_pktmbuf_free_bulk(struct rte_mbuf **mbufs, unsigned n);
void *ukcm_pktmbuf_mtod(struct rte_mbuf *m);
void ukcm_mbuf_view(const struct rte_mbuf *m, struct ukcm_mbuf_view *out);
/* Sets a single-segment mbuf's data window; -1 if it does not fit the buffer. */
int ukcm_mbuf_set_data(struct rte_mbuf *m, uint16_t off, uint16_t len);
unsigned ukcm_mempool_avail(const struct rte_mempool *mp);
unsigned ukcm_mempool_in_use(const struct rte_mempool *mp);
/* rte_pktmbuf_pool_create with objects of exactly one page (header, mbuf and data room,
 * unpadded: RTE_MEMPOOL_F_NO_SPREAD), so that objects are packed edge to edge and none
 * crosses a page. For net_af_xdp, which registers as UMEM `populated_size * object size`
 * bytes from the pool's first page: with smaller objects on 4 KiB pages the mempool starts
 * each object on a fresh page when it would cross one, the pool spans more than that, and
 * the mbufs past it make descriptors the kernel rejects. NULL with rte_errno on failure. */
struct rte_mempool *ukcm_pktmbuf_pool_create_paged(const char *name, unsigned n, unsigned cache, int socket);
/* Bytes from the pool's first page to the end of its last object (`span`), and what the
 * net_af_xdp PMD registers as UMEM for it (`registered`): every mbuf is usable for AF_XDP
 * only if span <= registered. */
void ukcm_mempool_umem_fit(struct rte_mempool *mp, uint64_t *span, uint64_t *registered);
uint16_t ukcm_pktmbuf_headroom(void);
/* Link state without blocking; the bitfields of rte_eth_link made plain. 0 or -errno. */
int ukcm_link(uint16_t port, uint32_t *speed_mbps, int *up, int *full_duplex);

#endif
