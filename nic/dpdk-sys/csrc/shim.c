#include "shim.h"
#include <stdio.h>
#include <unistd.h>

int ukcm_errno(void) { return rte_errno; }

unsigned ukcm_lcore_id(void) { return rte_lcore_id(); }

uint16_t ukcm_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n) {
    return rte_eth_rx_burst(port, queue, pkts, n);
}

uint16_t ukcm_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n) {
    return rte_eth_tx_burst(port, queue, pkts, n);
}

struct rte_mbuf *ukcm_pktmbuf_alloc(struct rte_mempool *mp) { return rte_pktmbuf_alloc(mp); }

int ukcm_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **mbufs, unsigned n) {
    return rte_pktmbuf_alloc_bulk(mp, mbufs, n);
}

void ukcm_pktmbuf_free(struct rte_mbuf *m) { rte_pktmbuf_free(m); }

void ukcm_pktmbuf_free_bulk(struct rte_mbuf **mbufs, unsigned n) { rte_pktmbuf_free_bulk(mbufs, n); }

void *ukcm_pktmbuf_mtod(struct rte_mbuf *m) { return rte_pktmbuf_mtod(m, void *); }

void ukcm_mbuf_view(const struct rte_mbuf *m, struct ukcm_mbuf_view *out) {
    out->buf = m->buf_addr;
    out->buf_len = m->buf_len;
    out->data_off = m->data_off;
    out->data_len = m->data_len;
    out->nb_segs = m->nb_segs;
    out->pkt_len = m->pkt_len;
}

int ukcm_mbuf_set_data(struct rte_mbuf *m, uint16_t off, uint16_t len) {
    if ((uint32_t)off + (uint32_t)len > m->buf_len || m->nb_segs != 1)
        return -1;
    m->data_off = off;
    m->data_len = len;
    m->pkt_len = len;
    return 0;
}

unsigned ukcm_mempool_avail(const struct rte_mempool *mp) { return rte_mempool_avail_count(mp); }

unsigned ukcm_mempool_in_use(const struct rte_mempool *mp) { return rte_mempool_in_use_count(mp); }

uint16_t ukcm_pktmbuf_headroom(void) { return RTE_PKTMBUF_HEADROOM; }

int ukcm_link(uint16_t port, uint32_t *speed_mbps, int *up, int *full_duplex) {
    struct rte_eth_link l;
    int rc = rte_eth_link_get_nowait(port, &l);
    if (rc != 0)
        return rc;
    *speed_mbps = l.link_speed;
    *up = l.link_status;
    *full_duplex = l.link_duplex;
    return 0;
}

static void ukcm_free_memzone(struct rte_mempool_memhdr *memhdr, void *opaque) {
    (void)memhdr;
    rte_memzone_free((const struct rte_memzone *)opaque);
}

/* rte_pktmbuf_pool_create with objects of exactly one page (see shim.h). */
struct rte_mempool *ukcm_pktmbuf_pool_create_paged(const char *name, unsigned n, unsigned cache, int socket) {
    size_t page = (size_t)getpagesize();
    size_t hdr = RTE_ALIGN_CEIL(sizeof(struct rte_mempool_objhdr), RTE_MEMPOOL_ALIGN);
    if (page < hdr + sizeof(struct rte_mbuf) + RTE_PKTMBUF_HEADROOM) {
        rte_errno = EINVAL;
        return NULL;
    }
    uint16_t data_room = (uint16_t)(page - hdr - sizeof(struct rte_mbuf));
    unsigned elt_size = sizeof(struct rte_mbuf) + data_room;
    if (rte_mempool_calc_obj_size(elt_size, RTE_MEMPOOL_F_NO_SPREAD, NULL) != page) {
        rte_errno = EINVAL;
        return NULL;
    }
    struct rte_pktmbuf_pool_private priv = { .mbuf_data_room_size = data_room, .mbuf_priv_size = 0, .flags = 0 };
    struct rte_mempool *mp =
        rte_mempool_create_empty(name, n, elt_size, cache, sizeof(priv), socket, RTE_MEMPOOL_F_NO_SPREAD);
    if (mp == NULL)
        return NULL;
    int rc = rte_mempool_set_ops_byname(mp, rte_mbuf_best_mempool_ops(), NULL);
    if (rc != 0)
        goto fail;
    rte_pktmbuf_pool_init(mp, &priv);
    /* One page-aligned area, so that the objects start at its first byte and end exactly
     * `n` pages later, where the PMD's UMEM ends (rte_mempool_populate_default places the
     * area after a malloc header, mid-page, and the first object on the next page). */
    char mz_name[RTE_MEMZONE_NAMESIZE];
    snprintf(mz_name, sizeof(mz_name), "%s_mz", name);
    size_t len = (size_t)n * page;
    const struct rte_memzone *mz = rte_memzone_reserve_aligned(mz_name, len, socket, 0, page);
    if (mz == NULL) {
        rc = -rte_errno;
        goto fail;
    }
    rc = rte_mempool_populate_virt(mp, mz->addr, len, page, ukcm_free_memzone, (void *)mz);
    if (rc < 0) {
        rte_memzone_free(mz);
        goto fail;
    }
    if ((unsigned)rc != n) {
        rc = -ENOSPC;
        goto fail;
    }
    rte_mempool_obj_iter(mp, rte_pktmbuf_init, NULL);
    return mp;
fail:
    rte_mempool_free(mp);
    rte_errno = rc < 0 ? -rc : rc;
    return NULL;
}

static void ukcm_obj_end(struct rte_mempool *mp, void *arg, void *obj, unsigned idx) {
    (void)idx;
    uintptr_t *end = arg;
    uintptr_t e = (uintptr_t)obj + mp->elt_size + mp->trailer_size;
    if (e > *end)
        *end = e;
}

void ukcm_mempool_umem_fit(struct rte_mempool *mp, uint64_t *span, uint64_t *registered) {
    struct rte_mempool_memhdr *h = STAILQ_FIRST(&mp->mem_list);
    uintptr_t addr = (uintptr_t)h->addr;
    uintptr_t base = addr & ~(uintptr_t)(getpagesize() - 1);
    uintptr_t end = 0;
    rte_mempool_obj_iter(mp, ukcm_obj_end, &end);
    *span = end - base;
    *registered = (uint64_t)mp->populated_size * rte_mempool_calc_obj_size(mp->elt_size, mp->flags, NULL) + (addr - base);
}
