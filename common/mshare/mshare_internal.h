/* mshare_internal: what the share-file sources share and callers must not see: the
 * little-endian field codecs, the header encoder the writer uses and the message helper.
 * Not a public header. */
#ifndef MIMIR_MSHARE_INTERNAL_H
#define MIMIR_MSHARE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "mshare/mshare.h"

/* Field offsets of the fixed header (docs/SHARES.md). */
enum {
	MSHARE_OFF_MAGIC = 0,
	MSHARE_OFF_VERSION = 8,
	MSHARE_OFF_SCHEME = 10,
	MSHARE_OFF_HEADER_BYTES = 12,
	MSHARE_OFF_MODEL_ID = 16,
	MSHARE_OFF_PARTY = 32,
	MSHARE_OFF_NPARTIES = 36,
	MSHARE_OFF_FRAC_BITS = 40,
	MSHARE_OFF_CHUNK = 44,
	MSHARE_OFF_RECIPIENT = 48,
	MSHARE_OFF_CONFIG = 80,
	MSHARE_OFF_NTENSORS = 108,
	MSHARE_OFF_TOTAL = 112,
	MSHARE_OFF_TABLE = MSHARE_FIXED_BYTES,
};

/* Bytes before the first chunk: clear header, sealed key, stream header. They are the
 * first chunk's additional data. */
#define MSHARE_PREFIX_MAX (MSHARE_HEADER_MAX + MSHARE_SEALED_KEY_BYTES + MSHARE_STREAM_HEADER_BYTES)

static inline uint32_t mshare_ld32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint16_t mshare_ld16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }

static inline uint64_t mshare_ld64(const uint8_t *p)
{
	return (uint64_t)mshare_ld32(p) | (uint64_t)mshare_ld32(p + 4) << 32;
}

static inline void mshare_st16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static inline void mshare_st32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static inline void mshare_st64(uint8_t *p, uint64_t v)
{
	mshare_st32(p, (uint32_t)v);
	mshare_st32(p + 4, (uint32_t)(v >> 32));
}

/* The size a file with this many shares, chunk size and tensors has, and its chunk
 * count. No overflow for any config model_config_parse accepts. */
uint64_t mshare_file_size(uint64_t total, uint32_t chunk_bytes, size_t ntensors,
			  uint64_t *chunks);

/* The llama2.c header (seven int32) of a config. */
void mshare_config_raw(const struct model_config *c, uint8_t out[MODEL_HEADER_BYTES]);

/* Encodes the clear header of info (version, party, nparties, frac_bits, chunk_bytes,
 * model_id, recipient, config_raw, ntensors, tensors, total are read) into buf, with its
 * checksum. Returns the header length. buf holds MSHARE_HEADER_MAX bytes. */
size_t mshare_header_encode(const struct mshare_info *info, uint8_t buf[MSHARE_HEADER_MAX]);

void mshare_seterr(char *err, size_t cap, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

#endif
