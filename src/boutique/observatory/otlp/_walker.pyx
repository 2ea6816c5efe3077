# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The compiled span walker: one pass over a request's protobuf wire format, no message objects.

The payload is read where it lies (varints, length-delimited fields, fixed64), by the rules of
`walk_rules`, without the GIL: each span leaves a record of offsets into the payload and its decoded
numbers, each ResourceSpans and ScopeSpans a record of its resource or scope and its spans. The
columns of the `SpanBatch` are then cut from the payload in one copy each. CRC-32 (for the tag
signatures) is the zlib one, computed here with slicing-by-8 tables.
"""

from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcpy, memset
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.unicode cimport PyUnicode_DecodeUTF8

import numpy as np

from boutique.observatory.model import SpanBatch
from boutique.observatory.otlp.walk_rules import BAD_IDS, MALFORMED, MAX_DEPTH, UNKNOWN_SERVICE, WalkError

cdef enum:
    OK = 0
    BAD = -1  # not a valid request
    NOMEM = -2
    INT32_LIMIT = 2147483647  # upb refuses lengths from here on

cdef int DEPTH = MAX_DEPTH

cdef uint32_t CRC[8][256]


cdef void _crc_tables() noexcept:
    cdef uint32_t c
    cdef int i, k, j
    for i in range(256):
        c = <uint32_t>i
        for j in range(8):
            c = (c >> 1) ^ 0xEDB88320U if c & 1 else c >> 1
        CRC[0][i] = c
    for i in range(256):
        for k in range(1, 8):
            CRC[k][i] = (CRC[k - 1][i] >> 8) ^ CRC[0][CRC[k - 1][i] & 0xFF]


_crc_tables()


cdef inline uint32_t _le32(const uint8_t* p) noexcept nogil:
    return <uint32_t>p[0] | (<uint32_t>p[1] << 8) | (<uint32_t>p[2] << 16) | (<uint32_t>p[3] << 24)


cdef inline uint64_t _le64(const uint8_t* p) noexcept nogil:
    return <uint64_t>_le32(p) | (<uint64_t>_le32(p + 4) << 32)


cdef inline uint32_t crc32(const uint8_t* p, Py_ssize_t n) noexcept nogil:
    """zlib's CRC-32 of n bytes."""
    cdef uint32_t c = 0xFFFFFFFFU
    cdef uint32_t one, two
    while n >= 8:
        one = _le32(p) ^ c
        two = _le32(p + 4)
        c = (CRC[7][one & 0xFF] ^ CRC[6][(one >> 8) & 0xFF] ^ CRC[5][(one >> 16) & 0xFF]
             ^ CRC[4][one >> 24] ^ CRC[3][two & 0xFF] ^ CRC[2][(two >> 8) & 0xFF]
             ^ CRC[1][(two >> 16) & 0xFF] ^ CRC[0][two >> 24])
        p += 8
        n -= 8
    while n > 0:
        c = (c >> 8) ^ CRC[0][(c ^ p[0]) & 0xFF]
        p += 1
        n -= 1
    return c ^ 0xFFFFFFFFU


cdef inline void add_tag(uint64_t* signature, const uint8_t* p, Py_ssize_t n) noexcept nogil:
    """Set the four signature bits of one serialized KeyValue (as `tagsig` does)."""
    cdef uint32_t h = crc32(p, n)
    cdef uint32_t slot
    cdef int shift
    for shift in range(0, 32, 8):
        slot = (h >> shift) & 0xFF
        signature[slot >> 6] |= (<uint64_t>1) << (slot & 63)


cdef bint valid_utf8(const uint8_t* p, Py_ssize_t n) noexcept nogil:
    """Whether n bytes are well-formed UTF-8 (no overlongs, surrogates or code points past U+10FFFF)."""
    cdef const uint8_t* end = p + n
    cdef uint8_t c, lo, hi
    cdef int more
    while p < end:
        while end - p >= 8 and (_le64(p) & 0x8080808080808080ULL) == 0:
            p += 8
        if p >= end:
            break
        c = p[0]
        if c < 0x80:
            p += 1
            continue
        lo, hi = 0x80, 0xBF
        if 0xC2 <= c <= 0xDF:
            more = 1
        elif 0xE0 <= c <= 0xEF:
            more = 2
            if c == 0xE0:
                lo = 0xA0
            elif c == 0xED:
                hi = 0x9F
        elif 0xF0 <= c <= 0xF4:
            more = 3
            if c == 0xF0:
                lo = 0x90
            elif c == 0xF4:
                hi = 0x8F
        else:
            return False
        if end - p <= more:
            return False
        if p[1] < lo or p[1] > hi:
            return False
        if more >= 2 and (p[2] & 0xC0) != 0x80:
            return False
        if more == 3 and (p[3] & 0xC0) != 0x80:
            return False
        p += more + 1
    return True


# ---- wire format -------------------------------------------------------------------------------


cdef inline const uint8_t* read_varint(const uint8_t* p, const uint8_t* end, uint64_t* value) noexcept nogil:
    """A varint of at most 10 bytes ending before `end` (bits past 64 dropped, as upb does); NULL if not."""
    cdef uint64_t v = 0
    cdef uint64_t b
    cdef int shift = 0
    while shift < 70:
        if p >= end:
            return NULL
        b = p[0]
        p += 1
        if shift < 64:
            v |= (b & 0x7F) << shift
        if b < 0x80:
            value[0] = v
            return p
        shift += 7
    return NULL


cdef inline const uint8_t* read_tag(const uint8_t* p, const uint8_t* end, uint32_t* tag) noexcept nogil:
    """A field tag: a varint of at most 5 bytes and 32 bits; NULL if not."""
    cdef uint64_t v
    cdef const uint8_t* start = p
    if p < end and p[0] < 0x80:
        tag[0] = p[0]
        return p + 1
    p = read_varint(p, end, &v)
    if p == NULL or p - start > 5 or v > 0xFFFFFFFFU:
        return NULL
    tag[0] = <uint32_t>v
    return p


cdef inline const uint8_t* read_length(const uint8_t* p, const uint8_t* end, Py_ssize_t* size) noexcept nogil:
    """The length of a length-delimited field, which must fit before `end`; NULL if not."""
    cdef uint64_t v
    p = read_varint(p, end, &v)
    if p == NULL or v >= INT32_LIMIT or v > <uint64_t>(end - p):
        return NULL
    size[0] = <Py_ssize_t>v
    return p


cdef const uint8_t* skip_group(const uint8_t* p, const uint8_t* end, uint32_t number, int depth) noexcept nogil:
    """Past the end of a group started with field `number`; NULL when it is not closed by its own number."""
    cdef uint32_t tag
    if p >= end or depth < 1:
        return NULL
    while p < end:
        p = read_tag(p, end, &tag)
        if p == NULL:
            return NULL
        if (tag & 7) == 4:
            return p if (tag >> 3) == number else NULL
        p = skip_field(p, end, tag, depth - 1)
        if p == NULL:
            return NULL
    return NULL


cdef const uint8_t* skip_field(const uint8_t* p, const uint8_t* end, uint32_t tag, int depth) noexcept nogil:
    """Past the value of an unknown field (or a known one with another wire type); NULL if malformed.

    `depth` is what is left for nesting in the message holding the field.
    """
    cdef uint64_t v
    cdef Py_ssize_t size
    cdef uint32_t wire = tag & 7
    if (tag >> 3) == 0:
        return NULL
    if wire == 0:
        return read_varint(p, end, &v)
    if wire == 1:
        return p + 8 if end - p >= 8 else NULL
    if wire == 2:
        p = read_length(p, end, &size)
        return p + size if p != NULL else NULL
    if wire == 3:
        return skip_group(p, end, tag >> 3, depth)
    if wire == 5:
        return p + 4 if end - p >= 4 else NULL
    return NULL  # 4 (an end of group no group opened) and 6, 7


# ---- what a walk collects ----------------------------------------------------------------------


cdef struct SpanRecord:
    Py_ssize_t trace       # offsets into the payload
    Py_ssize_t span
    Py_ssize_t parent      # -1: a root
    Py_ssize_t name
    Py_ssize_t name_size
    Py_ssize_t body
    Py_ssize_t body_size
    int64_t start_us
    int64_t duration_us
    uint64_t signature[4]
    uint8_t kind
    uint8_t status


cdef struct Group:
    Py_ssize_t offset      # the resource or scope bytes in the payload (size 0 when absent)
    Py_ssize_t size
    Py_ssize_t first       # its kept spans: records [first, last)
    Py_ssize_t last


cdef struct Walk:
    const uint8_t* data
    SpanRecord* spans
    Py_ssize_t count
    Py_ssize_t capacity
    Group* resources
    Py_ssize_t resource_count
    Py_ssize_t resource_capacity
    Group* scopes
    Py_ssize_t scope_count
    Py_ssize_t scope_capacity
    Py_ssize_t rejected


cdef int grow(void** items, Py_ssize_t* capacity, size_t item_size) noexcept nogil:
    """Double an array's capacity; NOMEM when memory is short."""
    cdef Py_ssize_t wanted = capacity[0] * 2 if capacity[0] else 16
    cdef void* bigger = realloc(items[0], wanted * item_size)
    if bigger == NULL:
        return NOMEM
    items[0] = bigger
    capacity[0] = wanted
    return OK


cdef int add_group(Group** groups, Py_ssize_t* count, Py_ssize_t* capacity,
                   Py_ssize_t offset, Py_ssize_t size, Py_ssize_t first, Py_ssize_t last) noexcept nogil:
    if count[0] == capacity[0] and grow(<void**>groups, capacity, sizeof(Group)) != OK:
        return NOMEM
    cdef Group* group = &groups[0][count[0]]
    group.offset, group.size, group.first, group.last = offset, size, first, last
    count[0] += 1
    return OK


# ---- the request -------------------------------------------------------------------------------


cdef int walk_request(Walk* w, const uint8_t* p, const uint8_t* end, int depth) noexcept nogil:
    """ExportTraceServiceRequest: resource_spans=1."""
    cdef uint32_t tag
    cdef Py_ssize_t size
    cdef int status
    while p < end:
        p = read_tag(p, end, &tag)
        if p == NULL:
            return BAD
        if tag == (1 << 3 | 2):
            p = read_length(p, end, &size)
            if p == NULL or depth < 1:
                return BAD
            status = walk_resource_spans(w, p, p + size, depth - 1)
            if status != OK:
                return status
            p += size
        else:
            p = skip_field(p, end, tag, depth)
            if p == NULL:
                return BAD
    return OK


cdef int walk_resource_spans(Walk* w, const uint8_t* p, const uint8_t* end, int depth) noexcept nogil:
    """ResourceSpans: resource=1 (bytes, the last one counts), scope_spans=2."""
    cdef uint32_t tag
    cdef Py_ssize_t size
    cdef Py_ssize_t resource = 0, resource_size = 0, first = w.count
    cdef int status
    while p < end:
        p = read_tag(p, end, &tag)
        if p == NULL:
            return BAD
        if tag == (1 << 3 | 2):
            p = read_length(p, end, &size)
            if p == NULL:
                return BAD
            resource, resource_size = p - w.data, size
            p += size
        elif tag == (2 << 3 | 2):
            p = read_length(p, end, &size)
            if p == NULL or depth < 1:
                return BAD
            status = walk_scope_spans(w, p, p + size, depth - 1)
            if status != OK:
                return status
            p += size
        else:
            p = skip_field(p, end, tag, depth)
            if p == NULL:
                return BAD
    return add_group(&w.resources, &w.resource_count, &w.resource_capacity,
                     resource, resource_size, first, w.count)


cdef int walk_scope_spans(Walk* w, const uint8_t* p, const uint8_t* end, int depth) noexcept nogil:
    """ScopeSpans: scope=1 (bytes, the last one counts), spans=2."""
    cdef uint32_t tag
    cdef Py_ssize_t size
    cdef Py_ssize_t scope = 0, scope_size = 0, first = w.count
    cdef int status
    while p < end:
        p = read_tag(p, end, &tag)
        if p == NULL:
            return BAD
        if tag == (1 << 3 | 2):
            p = read_length(p, end, &size)
            if p == NULL:
                return BAD
            scope, scope_size = p - w.data, size
            p += size
        elif tag == (2 << 3 | 2):
            p = read_length(p, end, &size)
            if p == NULL or depth < 1:
                return BAD
            status = walk_span(w, p, p + size, depth - 1)
            if status != OK:
                return status
            p += size
        else:
            p = skip_field(p, end, tag, depth)
            if p == NULL:
                return BAD
    if w.count > first:
        return add_group(&w.scopes, &w.scope_count, &w.scope_capacity, scope, scope_size, first, w.count)
    return OK


cdef inline bint all_zero(const uint8_t* p, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        if p[i]:
            return False
    return True


cdef int walk_span(Walk* w, const uint8_t* p, const uint8_t* end, int depth) noexcept nogil:
    """Span: the indexed fields, the signature of its and its events' attributes; a record if kept."""
    cdef const uint8_t* start = p
    cdef const uint8_t* trace = NULL
    cdef const uint8_t* span = NULL
    cdef const uint8_t* parent = NULL
    cdef const uint8_t* name = NULL
    cdef Py_ssize_t trace_size = 0, span_size = 0, parent_size = 0, name_size = 0, size
    cdef int32_t kind = 0, code = 0
    cdef uint64_t begin = 0, finish = 0, v
    cdef uint64_t signature[4]
    cdef uint32_t tag
    cdef SpanRecord* record
    memset(signature, 0, sizeof(signature))
    while p < end:
        p = read_tag(p, end, &tag)
        if p == NULL:
            return BAD
        if tag == (9 << 3 | 2):  # attributes
            p = read_length(p, end, &size)
            if p == NULL:
                return BAD
            add_tag(signature, p, size)
        elif tag == (1 << 3 | 2):  # trace_id
            p = read_length(p, end, &size)
            if p == NULL:
                return BAD
            trace, trace_size = p, size
        elif tag == (2 << 3 | 2):  # span_id
            p = read_length(p, end, &size)
            if p == NULL:
                return BAD
            span, span_size = p, size
        elif tag == (4 << 3 | 2):  # parent_span_id
            p = read_length(p, end, &size)
            if p == NULL:
                return BAD
            parent, parent_size = p, size
        elif tag == (5 << 3 | 2):  # name
            p = read_length(p, end, &size)
            if p == NULL or not valid_utf8(p, size):
                return BAD
            name, name_size = p, size
        elif tag == (6 << 3 | 0):  # kind
            p = read_varint(p, end, &v)
            if p == NULL:
                return BAD
            kind = <int32_t><uint32_t>v
            continue
        elif tag == (7 << 3 | 1):  # start_time_unix_nano
            if end - p < 8:
                return BAD
            begin = _le64(p)
            size = 8
        elif tag == (8 << 3 | 1):  # end_time_unix_nano
            if end - p < 8:
                return BAD
            finish = _le64(p)
            size = 8
        elif tag == (11 << 3 | 2):  # events
            p = read_length(p, end, &size)
            if p == NULL or depth < 1 or walk_event(signature, p, p + size, depth - 1) != OK:
                return BAD
        elif tag == (15 << 3 | 2):  # status
            p = read_length(p, end, &size)
            if p == NULL or depth < 1 or walk_status(&code, p, p + size, depth - 1) != OK:
                return BAD
        else:
            p = skip_field(p, end, tag, depth)
            if p == NULL:
                return BAD
            continue
        p += size
    if (trace_size != 16 or span_size != 8 or all_zero(trace, 16) or all_zero(span, 8)):
        w.rejected += 1
        return OK
    if w.count == w.capacity and grow(<void**>&w.spans, &w.capacity, sizeof(SpanRecord)) != OK:
        return NOMEM
    record = &w.spans[w.count]
    w.count += 1
    record.trace = trace - w.data
    record.span = span - w.data
    record.parent = parent - w.data if parent_size == 8 and not all_zero(parent, 8) else -1
    record.name = name - w.data if name_size else 0
    record.name_size = name_size
    record.body = start - w.data
    record.body_size = end - start
    record.start_us = <int64_t>(begin // 1000)
    record.duration_us = <int64_t>((finish - begin) // 1000) if finish > begin else 0
    memcpy(record.signature, signature, sizeof(signature))
    record.kind = <uint8_t>kind if 0 <= kind <= 5 else 0
    record.status = <uint8_t>code if 0 <= code <= 2 else 0
    return OK


cdef int walk_event(uint64_t* signature, const uint8_t* p, const uint8_t* end, int depth) noexcept nogil:
    """Span.Event: the signature bits of its attributes=3."""
    cdef uint32_t tag
    cdef Py_ssize_t size
    while p < end:
        p = read_tag(p, end, &tag)
        if p == NULL:
            return BAD
        if tag == (3 << 3 | 2):
            p = read_length(p, end, &size)
            if p == NULL:
                return BAD
            add_tag(signature, p, size)
            p += size
        else:
            p = skip_field(p, end, tag, depth)
            if p == NULL:
                return BAD
    return OK


cdef int walk_status(int32_t* code, const uint8_t* p, const uint8_t* end, int depth) noexcept nogil:
    """Status: message=2 (checked UTF-8), code=3 (int32, the last one counts, across merged statuses)."""
    cdef uint32_t tag
    cdef Py_ssize_t size
    cdef uint64_t v
    while p < end:
        p = read_tag(p, end, &tag)
        if p == NULL:
            return BAD
        if tag == (2 << 3 | 2):
            p = read_length(p, end, &size)
            if p == NULL or not valid_utf8(p, size):
                return BAD
            p += size
        elif tag == (3 << 3 | 0):
            p = read_varint(p, end, &v)
            if p == NULL:
                return BAD
            code[0] = <int32_t><uint32_t>v
        else:
            p = skip_field(p, end, tag, depth)
            if p == NULL:
                return BAD
    return OK


# ---- a resource: its identity and the signature of its attributes ------------------------------


cdef struct Identity:
    const uint8_t* service
    Py_ssize_t service_size
    const uint8_t* instance
    Py_ssize_t instance_size
    uint64_t signature[4]


cdef struct Value:
    int case               # the AnyValue oneof field last set (0: none)
    const uint8_t* text    # string_value when case == 1
    Py_ssize_t size


cdef int walk_resource(Identity* identity, const uint8_t* p, const uint8_t* end, int depth) noexcept nogil:
    """Resource: attributes=1, each a KeyValue."""
    cdef uint32_t tag
    cdef Py_ssize_t size
    while p < end:
        p = read_tag(p, end, &tag)
        if p == NULL:
            return BAD
        if tag == (1 << 3 | 2):
            p = read_length(p, end, &size)
            if p == NULL or depth < 1:
                return BAD
            add_tag(identity.signature, p, size)
            if walk_key_value(identity, p, p + size, depth - 1) != OK:
                return BAD
            p += size
        else:
            p = skip_field(p, end, tag, depth)
            if p == NULL:
                return BAD
    return OK


cdef inline bint same(const uint8_t* p, Py_ssize_t n, const char* text, Py_ssize_t size) noexcept nogil:
    cdef Py_ssize_t i
    if n != size:
        return False
    for i in range(n):
        if p[i] != <uint8_t>text[i]:
            return False
    return True


cdef int walk_key_value(Identity* identity, const uint8_t* p, const uint8_t* end, int depth) noexcept nogil:
    """KeyValue: key=1 (string), value=2 (AnyValue, merged); sets service and instance by their keys."""
    cdef uint32_t tag
    cdef Py_ssize_t size
    cdef const uint8_t* key = NULL
    cdef Py_ssize_t key_size = 0
    cdef Value value
    value.case, value.text, value.size = 0, NULL, 0
    while p < end:
        p = read_tag(p, end, &tag)
        if p == NULL:
            return BAD
        if tag == (1 << 3 | 2):
            p = read_length(p, end, &size)
            if p == NULL or not valid_utf8(p, size):
                return BAD
            key, key_size = p, size
            p += size
        elif tag == (2 << 3 | 2):
            p = read_length(p, end, &size)
            if p == NULL or depth < 1 or walk_any_value(&value, p, p + size, depth - 1) != OK:
                return BAD
            p += size
        else:
            p = skip_field(p, end, tag, depth)
            if p == NULL:
                return BAD
    if same(key, key_size, b"service.name", 12):
        if value.case == 1 and value.size > 0:
            identity.service, identity.service_size = value.text, value.size
    elif same(key, key_size, b"service.instance.id", 19):
        if value.case == 1:
            identity.instance, identity.instance_size = value.text, value.size
        else:
            identity.instance, identity.instance_size = NULL, 0
    return OK


cdef int walk_any_value(Value* value, const uint8_t* p, const uint8_t* end, int depth) noexcept nogil:
    """AnyValue: which of its oneof fields came last, and string_value when it is that one."""
    cdef uint32_t tag, number, wire
    cdef Py_ssize_t size
    cdef uint64_t v
    while p < end:
        p = read_tag(p, end, &tag)
        if p == NULL:
            return BAD
        number, wire = tag >> 3, tag & 7
        if wire == 2 and (number == 1 or 5 <= number <= 7):
            p = read_length(p, end, &size)
            if p == NULL:
                return BAD
            if number == 1:
                if not valid_utf8(p, size):
                    return BAD
                value.text, value.size = p, size
            value.case = number
            p += size
        elif wire == 0 and (number == 2 or number == 3):
            p = read_varint(p, end, &v)
            if p == NULL:
                return BAD
            value.case = number
        elif wire == 1 and number == 4:
            if end - p < 8:
                return BAD
            p += 8
            value.case = number
        else:
            p = skip_field(p, end, tag, depth)
            if p == NULL:
                return BAD
    return OK


# ---- from records to a batch -------------------------------------------------------------------


cdef object _text(const uint8_t* p, Py_ssize_t size, object default):
    if p == NULL:
        return default
    return PyUnicode_DecodeUTF8(<const char*>p, size, NULL)


cdef tuple _identity(bytes resource):
    """(service, instance, signature words) of a serialized Resource; WalkError if it is not one."""
    cdef Identity identity
    cdef const uint8_t* p = <const uint8_t*>PyBytes_AS_STRING(resource)
    cdef Py_ssize_t size = len(resource)
    cdef int status
    memset(&identity, 0, sizeof(identity))
    with nogil:
        status = walk_resource(&identity, p, p + size, DEPTH)
    if status != OK:
        raise WalkError(MALFORMED)
    return (
        _text(identity.service, identity.service_size, UNKNOWN_SERVICE),
        _text(identity.instance, identity.instance_size, ""),
        [identity.signature[0], identity.signature[1], identity.signature[2], identity.signature[3]],
    )


cdef void release(Walk* w) noexcept:
    free(w.spans)
    free(w.resources)
    free(w.scopes)


def walk(data):
    """The spans of a serialized ExportTraceServiceRequest as columns; `WalkError` if it is not one."""
    cdef const uint8_t[::1] view = data
    cdef Walk w
    cdef int status
    cdef Py_ssize_t size = view.shape[0]
    memset(&w, 0, sizeof(w))
    if size == 0:
        return SpanBatch()
    w.data = &view[0]
    w.capacity = min(size // 256 + 16, 1 << 16)  # about twice the spans of a typical request
    w.spans = <SpanRecord*>malloc(w.capacity * sizeof(SpanRecord))
    if w.spans == NULL:
        raise MemoryError()
    try:
        with nogil:
            status = walk_request(&w, w.data, w.data + size, DEPTH)
        if status == NOMEM:
            raise MemoryError()
        if status != OK:
            raise WalkError(MALFORMED)
        return _batch(&w)
    finally:
        release(&w)


cdef object _batch(Walk* w):
    """The SpanBatch of a finished walk (every resource is checked here, used or not)."""
    cdef Py_ssize_t n = w.count, i, j, k, total
    cdef Group* group
    cdef SpanRecord* record
    cdef const uint8_t* data = w.data
    cdef dict identities = {}, resource_numbers = {}, scope_numbers = {}
    cdef list services = [], instances = [], resource_signatures = []
    cdef bytes key
    cdef tuple identity
    cdef uint64_t words[4]
    cdef int32_t number

    resource_index = np.empty(n, dtype=np.int32)
    scope_index = np.empty(n, dtype=np.int32)
    signature = np.empty((n, 4), dtype=np.uint64)
    cdef int32_t[::1] resource_at = resource_index
    cdef int32_t[::1] scope_at = scope_index
    cdef uint64_t[:, ::1] signature_at = signature

    for j in range(w.resource_count):
        group = &w.resources[j]
        key = PyBytes_FromStringAndSize(<const char*>data + group.offset, group.size)
        identity = identities.get(key)
        if identity is None:
            identity = identities[key] = _identity(key)
        if group.first == group.last:
            continue
        if key not in resource_numbers:
            resource_numbers[key] = len(resource_numbers)
            services.append(identity[0])
            instances.append(identity[1])
        number = resource_numbers[key]
        for k in range(4):
            words[k] = identity[2][k]
        for i in range(group.first, group.last):
            resource_at[i] = number
            for k in range(4):
                signature_at[i, k] = w.spans[i].signature[k] | words[k]
    for j in range(w.scope_count):
        group = &w.scopes[j]
        key = PyBytes_FromStringAndSize(<const char*>data + group.offset, group.size)
        number = scope_numbers.setdefault(key, len(scope_numbers))
        for i in range(group.first, group.last):
            scope_at[i] = number

    trace_id = PyBytes_FromStringAndSize(NULL, 16 * n)
    span_id = PyBytes_FromStringAndSize(NULL, 8 * n)
    parent_id = PyBytes_FromStringAndSize(NULL, 8 * n)
    cdef char* trace_to = PyBytes_AS_STRING(trace_id)
    cdef char* span_to = PyBytes_AS_STRING(span_id)
    cdef char* parent_to = PyBytes_AS_STRING(parent_id)
    kind = np.empty(n, dtype=np.uint8)
    status = np.empty(n, dtype=np.uint8)
    start_us = np.empty(n, dtype=np.int64)
    duration_us = np.empty(n, dtype=np.int64)
    operation_offsets = np.empty(n + 1, dtype=np.int64)
    body_offsets = np.empty(n + 1, dtype=np.int64)
    cdef uint8_t[::1] kind_at = kind
    cdef uint8_t[::1] status_at = status
    cdef int64_t[::1] start_at = start_us
    cdef int64_t[::1] duration_at = duration_us
    cdef int64_t[::1] operation_at = operation_offsets
    cdef int64_t[::1] body_at = body_offsets
    cdef Py_ssize_t operation_size = 0, body_size = 0
    for i in range(n):
        record = &w.spans[i]
        memcpy(trace_to + 16 * i, data + record.trace, 16)
        memcpy(span_to + 8 * i, data + record.span, 8)
        if record.parent >= 0:
            memcpy(parent_to + 8 * i, data + record.parent, 8)
        else:
            memset(parent_to + 8 * i, 0, 8)
        kind_at[i] = record.kind
        status_at[i] = record.status
        start_at[i] = record.start_us
        duration_at[i] = record.duration_us
        operation_at[i] = operation_size
        body_at[i] = body_size
        operation_size += record.name_size
        body_size += record.body_size
    operation_at[n] = operation_size
    body_at[n] = body_size

    operation = PyBytes_FromStringAndSize(NULL, operation_size)
    body = PyBytes_FromStringAndSize(NULL, body_size)
    cdef char* operation_to = PyBytes_AS_STRING(operation)
    cdef char* body_to = PyBytes_AS_STRING(body)
    for i in range(n):
        record = &w.spans[i]
        memcpy(operation_to + operation_at[i], data + record.name, record.name_size)
        memcpy(body_to + body_at[i], data + record.body, record.body_size)

    return SpanBatch(
        size=n,
        trace_id=trace_id,
        span_id=span_id,
        parent_id=parent_id,
        kind=kind,
        status=status,
        start_us=start_us,
        duration_us=duration_us,
        operation=operation,
        operation_offsets=operation_offsets,
        body=body,
        body_offsets=body_offsets,
        resource_index=resource_index,
        scope_index=scope_index,
        resources=list(resource_numbers),
        services=services,
        instances=instances,
        scopes=list(scope_numbers),
        signature=signature,
        rejected=w.rejected,
        rejection=BAD_IDS if w.rejected else "",
    )


def card_candidates(const uint8_t[::1] body, const int64_t[::1] offsets):
    """Indexes of the spans whose bytes hold a run of 13+ digits with at most one space or dash between two.

    What `processors.redact` looks for (its `_CANDIDATE_BYTES`), found in one pass over a batch's bodies
    without the GIL; only these spans are decoded and checked for card numbers.
    """
    cdef Py_ssize_t spans = offsets.shape[0] - 1
    cdef Py_ssize_t i, k, end
    cdef int digits
    cdef bint after_separator
    cdef uint8_t c
    cdef uint8_t[::1] hit = np.zeros(max(spans, 0), dtype=np.uint8)
    with nogil:
        for i in range(spans):
            digits = 0
            after_separator = False
            end = offsets[i + 1]
            k = offsets[i]
            while k < end:
                c = body[k]
                if 0x30 <= c <= 0x39:
                    digits += 1
                    after_separator = False
                    if digits >= 13:
                        hit[i] = 1
                        break
                elif (c == 0x20 or c == 0x2D) and digits and not after_separator:
                    after_separator = True
                else:
                    digits = 0
                    after_separator = False
                k += 1
    return np.flatnonzero(np.asarray(hit)).tolist()
