package store

// A damaged bbolt file must fail OpenBolt with an error, not crash the
// process. bbolt trusts its file: with NoFreelistSync it walks every page
// of the tree at open (DB.freepages), in a goroutine of its own, and a
// page id past the end of the file is a SIGBUS or SIGSEGV on the mapping,
// a page that is not what its parent says is a panic. Neither can be
// recovered from outside that goroutine. So before bbolt sees the file,
// checkBoltFile reads it with plain reads (no mapping, nothing can fault)
// and checks what bbolt's walk relies on; a file that passes is one that
// walk can read.
//
// The layout below is bbolt v1.5.0's (go.etcd.io/bbolt/internal/common:
// page.go, meta.go, bucket.go; db.go for how the meta page and the page
// size are found). Integers are in the machine's byte order, as bbolt
// writes them through unsafe casts.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
)

// ErrDamaged means the store file exists but is not a whole bbolt
// database: cut short, overwritten in part, or not a store at all.
var ErrDamaged = errors.New("the store file is damaged")

// damaged is the error for a damaged file at path: what is wrong, and
// what to do, since nothing here can mend it.
func damaged(path string, what error) error {
	return fmt.Errorf("storage %s: %w: %v; restore the file from a backup (caddy sigra has no repair)", path, ErrDamaged, what)
}

const (
	boltMagic   = 0xED0CDAED
	boltVersion = 2

	pageHeaderSize   = 16 // id u64, flags u16, count u16, overflow u32
	metaSize         = 64 // magic, version, pageSize, flags u32; root bucket (root, sequence u64); freelist, pgid, txid, checksum u64
	metaChecksumAt   = 56 // the checksum is FNV-64a of the meta before it
	elemSize         = 16 // a branch element (pos, ksize u32, pgid u64) and a leaf element (flags, pos, ksize, vsize u32) alike
	bucketHeaderSize = 16 // root u64, sequence u64

	branchPageFlag   = 0x01
	leafPageFlag     = 0x02
	freelistPageFlag = 0x10
	bucketLeafFlag   = 0x01

	noFreelist = ^uint64(0) // the meta's freelist with NoFreelistSync

	// metaProbe is how much of a page getPageSize reads to find a meta.
	metaProbe = 0x1000

	// What the walk of a file's pages allows: bbolt makes pages of the
	// system's page size (4 to 64 KiB; 1 KiB in tests), a tree is a few pages deep per
	// bucket (log of its pages), and no value Sigra stores comes near a
	// run of pages of maxPageRun. A file beyond these is damaged or made
	// to exhaust the checker's stack or memory.
	minPageSize   = 1 << 10
	maxPageSize   = 64 << 10
	maxWalkDepth  = 100 // pages from the top root down, through every bucket
	maxPageRun    = 32 << 20
	maxWalkBuffer = 64 << 20 // all the walk's page buffers together
)

var ne = binary.NativeEndian

// boltMeta is a decoded meta page.
type boltMeta struct {
	magic, version, pageSize uint32
	root, freelist, pgid     uint64
	txid                     uint64
	valid                    error // nil when magic, version and checksum hold
}

// parseMeta decodes the meta in page (its header first), as
// common.Meta.Validate judges it.
func parseMeta(page []byte) boltMeta {
	if len(page) < pageHeaderSize+metaSize {
		return boltMeta{valid: errors.New("cut short")}
	}
	b := page[pageHeaderSize : pageHeaderSize+metaSize]
	m := boltMeta{
		magic:    ne.Uint32(b[0:]),
		version:  ne.Uint32(b[4:]),
		pageSize: ne.Uint32(b[8:]),
		root:     ne.Uint64(b[16:]),
		freelist: ne.Uint64(b[32:]),
		pgid:     ne.Uint64(b[40:]),
		txid:     ne.Uint64(b[48:]),
	}
	h := fnv.New64a()
	h.Write(b[:metaChecksumAt])
	switch {
	case m.magic != boltMagic:
		m.valid = errors.New("no bbolt magic number")
	case m.version != boltVersion:
		m.valid = fmt.Errorf("format version %d, not %d", m.version, boltVersion)
	case ne.Uint64(b[metaChecksumAt:]) != h.Sum64():
		m.valid = errors.New("checksum mismatch")
	}
	return m
}

// readFull reads len(buf) bytes at off; a short read is an error.
func readFull(f *os.File, buf []byte, off int64) error {
	n, err := f.ReadAt(buf, off)
	if n == len(buf) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// readMetas reads the two meta pages of a file of page size ps, where
// DB.mmap validates them: meta 0 at offset 0, meta 1 at the page size.
// A page that cannot be read whole is invalid, with the read's error.
func readMetas(f *os.File, ps uint64) [2]boltMeta {
	var metas [2]boltMeta
	for i := range metas {
		page := make([]byte, pageHeaderSize+metaSize)
		if err := readFull(f, page, int64(i)*int64(ps)); err != nil {
			metas[i] = boltMeta{valid: err}
			continue
		}
		metas[i] = parseMeta(page)
	}
	return metas
}

// currentMeta is the meta DB.meta uses: the valid one with the higher
// transaction id (invalid when neither is valid).
func currentMeta(metas [2]boltMeta) boltMeta {
	if metas[0].valid != nil || (metas[1].valid == nil && metas[1].txid > metas[0].txid) {
		return metas[1]
	}
	return metas[0]
}

// boltHeader is what the meta pages say about the file.
type boltHeader struct {
	pageSize uint64
	meta     boltMeta // the one bbolt will use
}

// readBoltHeader finds the page size and the meta page bbolt will use,
// and checks that the file holds every page that meta counts.
func readBoltHeader(f *os.File, size int64) (boltHeader, error) {
	// DB.getPageSize: the page size of meta 0 if it is valid, else that of
	// the first valid meta found at 1 KiB << i.
	var ps uint64
	var buf [metaProbe]byte
	meta0 := boltMeta{valid: errors.New("cut short")}
	if n, _ := f.ReadAt(buf[:], 0); n == len(buf) {
		if meta0 = parseMeta(buf[:]); meta0.valid == nil {
			ps = uint64(meta0.pageSize)
		}
	}
	for i := 0; ps == 0 && i <= 14; i++ {
		pos := int64(1024) << i
		if pos >= size-1024 {
			break
		}
		buf = [metaProbe]byte{}
		n, err := f.ReadAt(buf[:], pos)
		if n == len(buf) || (err == io.EOF && int64(n) == size-pos) {
			if m := parseMeta(buf[:]); m.valid == nil {
				ps = uint64(m.pageSize)
			}
		}
	}
	if ps == 0 {
		if size < metaProbe {
			return boltHeader{}, fmt.Errorf("it is %d bytes long, too short for a bbolt database", size)
		}
		if meta0.magic != boltMagic {
			return boltHeader{}, errors.New("neither of its two bbolt header (meta) pages is valid: it is not a Sigra store, or its start was overwritten")
		}
		return boltHeader{}, fmt.Errorf("neither of its two bbolt header (meta) pages is valid (the first: %v)", meta0.valid)
	}
	if ps < minPageSize || ps > maxPageSize || ps&(ps-1) != 0 {
		return boltHeader{}, fmt.Errorf("its header gives a page size of %d bytes, which bbolt does not make", ps)
	}

	metas := readMetas(f, ps)
	m := currentMeta(metas)
	if m.valid != nil {
		return boltHeader{}, fmt.Errorf("neither of its two bbolt header (meta) pages is valid (meta 0: %v; meta 1: %v)", metas[0].valid, metas[1].valid)
	}
	if uint64(m.pageSize) != ps {
		return boltHeader{}, fmt.Errorf("its header pages disagree on the page size (%d and %d bytes)", ps, m.pageSize)
	}
	switch {
	case m.root < 2 || m.root >= m.pgid:
		return boltHeader{}, fmt.Errorf("its header puts the root at page %d of %d", m.root, m.pgid)
	case m.freelist != noFreelist && (m.freelist < 2 || m.freelist >= m.pgid):
		return boltHeader{}, fmt.Errorf("its header puts the freelist at page %d of %d", m.freelist, m.pgid)
	case uint64(size)/ps < m.pgid:
		return boltHeader{}, fmt.Errorf("it is %d bytes long, but its header counts %d pages of %d bytes (%d bytes): it was cut short", size, m.pgid, ps, m.pgid*ps)
	}
	return boltHeader{pageSize: ps, meta: m}, nil
}

// pageSet is a set of page ids below the high water mark.
type pageSet []uint64

func (s pageSet) has(id uint64) bool { return s[id/64]&(1<<(id%64)) != 0 }
func (s pageSet) add(id uint64)      { s[id/64] |= 1 << (id % 64) }

// boltWalker reads the tree from the file as bbolt's open-time walk will
// (Tx.recursivelyCheckBucket: every page's id and type, each page used
// once, keys in order, then each child bucket), and the freelist page as
// DB.loadFreelist will, checking every offset before it is used.
type boltWalker struct {
	f    *os.File
	ps   uint64
	hwm  uint64   // the meta's pgid: pages 0 to hwm-1 exist
	used pageSet  // pages of the tree (and the freelist page)
	bufs [][]byte // a page buffer per depth, reused
	// only, if set, limits the walk to the buckets on one path: the
	// top-level tree, then at each level the bucket only names (level
	// counts the buckets entered).
	only  [][]byte
	level int
	// buffered is the size of bufs in all.
	buffered uint64
}

// checkBoltTree walks the file's tree and freelist; the file must be
// locked against writers, or a commit under way reads as damage.
func checkBoltTree(f *os.File, h boltHeader) error {
	if err := checkNotHollow(f, h); err != nil {
		return err
	}
	w := &boltWalker{f: f, ps: h.pageSize, hwm: h.meta.pgid, used: make(pageSet, h.meta.pgid/64+1)}
	var free []uint64
	if h.meta.freelist != noFreelist {
		var err error
		if free, err = w.freelist(h.meta.freelist); err != nil {
			return err
		}
	}
	if _, err := w.tree(h.meta.root, 0, nil, nil); err != nil {
		return err
	}
	for _, id := range free {
		if w.used.has(id) {
			return fmt.Errorf("page %d is both free and in use", id)
		}
	}
	return nil
}

// checkBoltTop walks the pages that checkIsStore reads: the top-level
// tree, Sigra's root bucket and its format bucket, as checkBoltTree
// does (so no page is met twice: a tree that loops back on itself would
// send bbolt's search into endless recursion). The file must be locked
// against writers.
func checkBoltTop(f *os.File, h boltHeader) error {
	if err := checkNotHollow(f, h); err != nil {
		return err
	}
	w := &boltWalker{f: f, ps: h.pageSize, hwm: h.meta.pgid, used: make(pageSet, h.meta.pgid/64+1), only: [][]byte{rootBucket, bktFormat}}
	_, err := w.tree(h.meta.root, 0, nil, nil)
	return err
}

// checkNotHollow refuses a file most of whose counted pages begin in a
// hole: bbolt writes every page it counts before it counts it, and every
// page but the continuation of a multi-page value starts with its header,
// never zero; but a tiny sparse file counting a huge number of pages
// would cost the walk and bbolt's own open (it lists every page id below
// the count) time and memory in proportion to the count, not to the
// file. Holes inside pages pass: a sparse copy of a store turns the zero
// tails of its pages into holes, and the zero continuation pages of a
// value too (Sigra stores no such values; another program's file of
// mostly those is called damaged, not named).
func checkNotHollow(f *os.File, h boltHeader) error {
	if n := dataPages(f, h.pageSize, h.meta.pgid); n < h.meta.pgid/2 {
		return fmt.Errorf("its header counts %d pages, but only %d of them begin with data: bbolt writes every page it counts", h.meta.pgid, n)
	}
	return nil
}

// page reads page id with its overflow pages into the buffer of depth,
// checking that it is below the high water mark, says it is page id, has
// flags want, and was not met before.
func (w *boltWalker) page(id uint64, depth int, want uint16) ([]byte, error) {
	if id < 2 || id >= w.hwm {
		return nil, fmt.Errorf("a reference to page %d, outside pages 2 to %d", id, w.hwm-1)
	}
	if depth > maxWalkDepth {
		return nil, fmt.Errorf("page %d lies more than %d pages below the root", id, maxWalkDepth)
	}
	for len(w.bufs) <= depth {
		if err := w.grow(w.ps); err != nil {
			return nil, fmt.Errorf("page %d: %w", id, err)
		}
		w.bufs = append(w.bufs, make([]byte, w.ps))
	}
	p := w.bufs[depth][:w.ps]
	if err := readFull(w.f, p, int64(id*w.ps)); err != nil {
		return nil, fmt.Errorf("page %d: %w", id, err)
	}
	if got := ne.Uint64(p[0:]); got != id {
		return nil, fmt.Errorf("page %d is damaged (its header says it is page %d)", id, got)
	}
	if flags := ne.Uint16(p[8:]); flags == 0 || flags&^want != 0 || flags&(flags-1) != 0 {
		// One type flag, one of those wanted (Page.FastCheck, then
		// verifyPageReachable's branch or leaf).
		return nil, fmt.Errorf("page %d has type flags %#x, not one of %#x", id, flags, want)
	}
	overflow := uint64(ne.Uint32(p[12:]))
	if overflow >= w.hwm-id {
		return nil, fmt.Errorf("page %d runs %d pages past the last page %d", id, overflow, w.hwm-1)
	}
	size := (overflow + 1) * w.ps
	if size > maxPageRun {
		return nil, fmt.Errorf("page %d runs over %d pages (%d bytes): no store has such a page", id, overflow+1, size)
	}
	for i := id; i <= id+overflow; i++ {
		if w.used.has(i) {
			return nil, fmt.Errorf("page %d is used twice", i)
		}
		w.used.add(i)
	}
	if overflow > 0 {
		if have := uint64(cap(w.bufs[depth])); have < size {
			if err := w.grow(size - have); err != nil {
				return nil, fmt.Errorf("page %d: %w", id, err)
			}
			grown := make([]byte, size)
			copy(grown, w.bufs[depth][:w.ps])
			w.bufs[depth] = grown
		}
		p = w.bufs[depth][:size]
		if err := readFull(w.f, p[w.ps:], int64((id+1)*w.ps)); err != nil {
			return nil, fmt.Errorf("page %d: %w", id, err)
		}
	}
	return p, nil
}

// grow counts n more bytes of page buffers, within maxWalkBuffer.
func (w *boltWalker) grow(n uint64) error {
	if w.buffered+n > maxWalkBuffer {
		return fmt.Errorf("its pages on one path from the root hold over %d bytes: no store has such pages", maxWalkBuffer)
	}
	w.buffered += n
	return nil
}

// freelist checks the freelist page (Page.FreelistPageIds) and returns
// the ids it lists.
func (w *boltWalker) freelist(id uint64) ([]uint64, error) {
	p, err := w.page(id, 0, freelistPageFlag)
	if err != nil {
		return nil, err
	}
	idx, count := uint64(0), uint64(ne.Uint16(p[10:]))
	if count == 0xFFFF {
		idx, count = 1, ne.Uint64(p[pageHeaderSize:])
	}
	if count > (uint64(len(p))-pageHeaderSize)/8-idx {
		return nil, fmt.Errorf("freelist page %d lists %d pages, more than it holds", id, count)
	}
	free := make([]uint64, count)
	seen := make(pageSet, w.hwm/64+1)
	for i := range free {
		f := ne.Uint64(p[pageHeaderSize+(idx+uint64(i))*8:])
		if f < 2 || f >= w.hwm {
			return nil, fmt.Errorf("freelist page %d lists page %d, outside pages 2 to %d", id, f, w.hwm-1)
		}
		if seen.has(f) {
			return nil, fmt.Errorf("freelist page %d lists page %d twice", id, f)
		}
		seen.add(f)
		free[i] = f
	}
	return free, nil
}

// elem is an element of a branch or leaf page, with its key and value
// (nil for a branch) checked to lie within the page.
type elem struct {
	flags uint32
	key   []byte
	value []byte
	child uint64 // a branch element's page
}

// elemCount returns the number of elements of page p (a page header
// then the element array), checking that the array fits, and that the
// elements' keys and values lie after it and each after the one
// before, none overlapping, as node.write lays them out: so the work of
// comparing keys, and of walking inline buckets (values), is bounded by
// the page's size.
func elemCount(p []byte, leaf bool) (int, error) {
	count := uint64(ne.Uint16(p[10:]))
	end := pageHeaderSize + count*elemSize
	if end > uint64(len(p)) {
		return 0, fmt.Errorf("%d elements do not fit in its %d bytes", count, len(p))
	}
	for i := range count {
		at := pageHeaderSize + i*elemSize
		b := p[at : at+elemSize]
		var pos, ksize, vsize uint64
		if leaf {
			pos, ksize, vsize = uint64(ne.Uint32(b[4:])), uint64(ne.Uint32(b[8:])), uint64(ne.Uint32(b[12:]))
		} else {
			pos, ksize = uint64(ne.Uint32(b[0:])), uint64(ne.Uint32(b[4:]))
		}
		start := at + pos
		if start < end {
			return 0, fmt.Errorf("element %d overlaps the element array or the element before it", i)
		}
		end = start + ksize + vsize
	}
	return int(count), nil
}

// elemAt decodes element i of page p, whose array elemCount checked; an
// element's pos counts from the element itself.
func elemAt(p []byte, i int, leaf bool) (elem, error) {
	at := pageHeaderSize + uint64(i)*elemSize
	b := p[at : at+elemSize]
	var e elem
	var pos, ksize, vsize uint64
	if leaf {
		e.flags = ne.Uint32(b[0:])
		pos, ksize, vsize = uint64(ne.Uint32(b[4:])), uint64(ne.Uint32(b[8:])), uint64(ne.Uint32(b[12:]))
	} else {
		pos, ksize = uint64(ne.Uint32(b[0:])), uint64(ne.Uint32(b[4:]))
		e.child = ne.Uint64(b[8:])
	}
	start := at + pos
	if start+ksize+vsize > uint64(len(p)) {
		return elem{}, fmt.Errorf("element %d lies past the end of the page", i)
	}
	e.key = p[start : start+ksize : start+ksize]
	if leaf {
		e.value = p[start+ksize : start+ksize+vsize : start+ksize+vsize]
	}
	return e, nil
}

// inOrder is bbolt's verifyKeyOrder: the element at index i with key is
// after prev (or not before it, for the first one, whose prev comes from
// the parent) and before maxOpen.
func inOrder(i int, key, prev, maxOpen []byte) bool {
	if i == 0 && prev != nil && bytes.Compare(prev, key) > 0 {
		return false
	}
	if i > 0 && bytes.Compare(prev, key) >= 0 {
		return false
	}
	return maxOpen == nil || bytes.Compare(key, maxOpen) < 0
}

// tree walks the subtree at page id, whose keys lie in [minClosed,
// maxOpen), and every bucket below it, as
// Tx.recursivelyCheckPageKeyOrderInternal does; it returns (a copy of)
// the largest key in the subtree. The page is read into the buffer of
// depth; what is below it, into deeper ones.
func (w *boltWalker) tree(id uint64, depth int, minClosed, maxOpen []byte) ([]byte, error) {
	p, err := w.page(id, depth, branchPageFlag|leafPageFlag)
	if err != nil {
		return nil, err
	}
	leaf := ne.Uint16(p[8:]) == leafPageFlag
	n, err := elemCount(p, leaf)
	if err != nil {
		return nil, fmt.Errorf("page %d: %w", id, err)
	}
	if !leaf && n == 0 {
		// A cursor would read a first element that is not there.
		return nil, fmt.Errorf("branch page %d is empty", id)
	}
	var max []byte
	prev := minClosed
	for i := range n {
		e, err := elemAt(p, i, leaf)
		if err != nil {
			return nil, fmt.Errorf("page %d: %w", id, err)
		}
		if !inOrder(i, e.key, prev, maxOpen) {
			return nil, fmt.Errorf("page %d: key %d is out of order", id, i)
		}
		if leaf {
			prev, max = e.key, e.key
			if e.flags&bucketLeafFlag != 0 && w.enters(e.key) {
				w.level++
				err := w.bucket(id, depth, i, e.value)
				w.level--
				if err != nil {
					return nil, err
				}
			}
			continue
		}
		next := maxOpen
		if i+1 < n {
			nx, err := elemAt(p, i+1, false)
			if err != nil {
				return nil, fmt.Errorf("page %d: %w", id, err)
			}
			next = nx.key
		}
		if max, err = w.tree(e.child, depth+1, e.key, next); err != nil {
			return nil, err
		}
		prev = max
	}
	return bytes.Clone(max), nil
}

// enters reports whether the walk enters the bucket named key, at the
// current level.
func (w *boltWalker) enters(key []byte) bool {
	return w.only == nil || w.level < len(w.only) && bytes.Equal(key, w.only[w.level])
}

// bucket walks the bucket whose header is value, element i of leaf page
// id at depth: a tree of its own, or an inline leaf page after the
// header.
func (w *boltWalker) bucket(id uint64, depth, i int, value []byte) error {
	if len(value) < bucketHeaderSize {
		return fmt.Errorf("page %d: bucket %d has a %d-byte header", id, i, len(value))
	}
	if root := ne.Uint64(value); root != 0 {
		_, err := w.tree(root, depth+1, nil, nil)
		return err
	}
	p := value[bucketHeaderSize:]
	if len(p) < pageHeaderSize || ne.Uint16(p[8:]) != leafPageFlag {
		return fmt.Errorf("page %d: inline bucket %d is not a leaf page", id, i)
	}
	n, err := elemCount(p, true)
	if err != nil {
		return fmt.Errorf("page %d: inline bucket %d: %w", id, i, err)
	}
	var prev []byte
	for j := range n {
		e, err := elemAt(p, j, true)
		if err != nil {
			return fmt.Errorf("page %d: inline bucket %d: %w", id, i, err)
		}
		if !inOrder(j, e.key, prev, nil) {
			return fmt.Errorf("page %d: inline bucket %d: key %d is out of order", id, i, j)
		}
		prev = e.key
		if e.flags&bucketLeafFlag != 0 {
			// bbolt inlines only a bucket without buckets (Bucket.inlineable).
			return fmt.Errorf("page %d: inline bucket %d holds a bucket", id, i)
		}
	}
	return nil
}

// CheckStore refuses, without waiting for a lock and without writing,
// a file at path that carries no bbolt magic number in any place a
// header page could be: a store path that names another file
// (/etc/passwd, a Caddyfile); and a bbolt file whose header pages say it
// was cut short, or are both damaged. It is for caddy validate, which
// must not wait for the lock a running Caddy holds; a magic number never
// changes once written, so a store being committed to meanwhile passes.
//
// When no process holds the file, it refuses what the start would
// refuse, short of walking the whole tree (OpenBolt does): an empty
// file, a bbolt file of another program, a store of a newer format
// (checkUnheld). A missing file passes when the start can make it
// (checkMakeable); one unreadable passes: the start says what is wrong
// with it. So does a directory, which the caller names.
//
// When it read the store (no process held it), it also returns the value
// of the secret named secret ("": none), as stored (sealed): nil when the
// store has none, or was not read. caddy validate checks with it that the
// configured encryption key opens the store.
func CheckStore(path, secret string) ([]byte, error) {
	var v []byte
	err := checkIsBolt(path, secret, &v)
	return v, err
}

func checkIsBolt(path, secret string, v *[]byte) error {
	// Looked at before it is opened: opening a FIFO waits for a writer.
	if fi, err := os.Stat(path); err == nil && !fi.IsDir() && !fi.Mode().IsRegular() {
		return notRegular(path, fi)
	}
	f, err := os.Open(path)
	if err != nil {
		return checkMakeable(path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || fi.IsDir() {
		return nil
	}
	if !fi.Mode().IsRegular() {
		return notRegular(path, fi)
	}
	if fi.Size() == 0 {
		return checkUnheld(f, path, secret, v)
	}
	var b [pageHeaderSize + 4]byte
	for i := -1; i <= 14; i++ {
		pos := int64(0)
		if i >= 0 {
			pos = int64(1024) << i
		}
		if pos >= fi.Size() {
			break
		}
		if n, _ := f.ReadAt(b[:], pos); n == len(b) && ne.Uint32(b[pageHeaderSize:]) == boltMagic {
			// A bbolt file: one cut short, or whose header pages are both
			// damaged, is refused here as at the start. A commit under way
			// leaves one header page valid, and grows the file before it
			// writes the header that counts the new pages: a header that
			// counts more pages than the file had is read again with the
			// size the file has now.
			size := fi.Size()
			for tries := 0; ; tries++ {
				_, err := readBoltHeader(f, size)
				if err == nil {
					break
				}
				now, serr := f.Stat()
				if serr != nil || now.Size() == size || tries == 3 {
					return damaged(path, err)
				}
				size = now.Size()
			}
			return checkUnheld(f, path, secret, v)
		}
	}
	return fmt.Errorf("storage %s: %w: it is no bbolt file (no header page); check the storage path", path, ErrNotStore)
}

func notRegular(path string, fi fs.FileInfo) error {
	return fmt.Errorf("storage %s: %w: it is not a regular file (%v); check the storage path", path, ErrNotStore, fi.Mode().Type())
}

// notThere reports whether err says a path, or a directory on it, is
// missing.
func notThere(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR)
}

// checkMakeable refuses a store path that could not be opened (openErr)
// and where the start could make no store either. The start makes the
// missing directories of the path as written (writtenDir), then opens it, creating
// the file, through any links: so a path that is a link (or a chain of
// them) to a file still to be made needs that file's directory to be
// there, and one that is not a link needs every directory on it that is
// there to be a directory, not a file (/etc/passwd/sigra.db) nor a link
// to nothing. Any other error is the start's to report.
func checkMakeable(path string, openErr error) error {
	if !notThere(openErr) {
		return nil
	}
	if target, linked := linkEnd(path); linked {
		if fi, err := os.Stat(filepath.Dir(target)); err != nil || !fi.IsDir() {
			return fmt.Errorf("storage %s: a symbolic link to %s, whose directory does not exist; check the storage path", path, target)
		}
		return nil
	}
	for dir := writtenDir(path); ; dir = writtenDir(dir) {
		fi, err := os.Stat(dir)
		switch {
		case err == nil && !fi.IsDir():
			return fmt.Errorf("storage %s: %s is not a directory, so no store can be made there; check the storage path", path, dir)
		case err == nil, !notThere(err):
			return nil
		}
		if target, linked := linkEnd(dir); linked {
			return fmt.Errorf("storage %s: %s is a symbolic link to %s, which does not exist; check the storage path", path, dir, target)
		}
		if writtenDir(dir) == dir {
			return nil
		}
	}
}

// writtenDir is the directory of path as the system reads it: path
// without its last element, not cleaned. filepath.Dir would read
// "x/../data/sigra.db" as in "data", which the system reaches only
// through an x that exists; the start makes the directories as written
// (x, then data), and this check walks them the same way.
func writtenDir(path string) string {
	i := len(path) - 1
	for i > 0 && os.IsPathSeparator(path[i]) {
		i--
	}
	for i >= 0 && !os.IsPathSeparator(path[i]) {
		i--
	}
	if i < 0 {
		return "."
	}
	for i > 0 && os.IsPathSeparator(path[i-1]) {
		i--
	}
	if i == 0 {
		return path[:1]
	}
	return path[:i]
}

// linkEnd follows path while it is a symbolic link, and returns where
// the links end (a path that is not a link, or is missing), and whether
// path was a link at all.
func linkEnd(path string) (string, bool) {
	linked := false
	for range 40 { // the system's own bound on a chain is about as long
		fi, err := os.Lstat(path)
		if err != nil || fi.Mode()&fs.ModeSymlink == 0 {
			break
		}
		target, err := os.Readlink(path)
		if err != nil {
			break
		}
		if !filepath.IsAbs(target) {
			// From the directory the link is really in: through a linked
			// directory, the system reads "../" from there, not from the
			// path as written.
			dir := filepath.Dir(path)
			if real, err := filepath.EvalSymlinks(dir); err == nil {
				dir = real
			}
			target = filepath.Join(dir, target)
		}
		path, linked = target, true
	}
	return path, linked
}

// checkUnheld checks f, the file at path, as a store the way the start
// would, if no process holds it: an empty file is refused (settledEmpty),
// and so is a bbolt file of another program or a store of a newer format
// (checkIsStore, after checkBoltTop has walked the pages it reads). A
// file held (by a running Caddy; by this one, during a reload) passes:
// it was checked when it was opened, and its lock is not waited for. So
// does one taken between the look and the read-only open, which waits
// for it briefly.
func checkUnheld(f *os.File, path, secret string, v *[]byte) error {
	if fi, err := f.Stat(); err != nil {
		return nil
	} else if fi.Size() == 0 {
		empty, held := settledEmpty(f, 0)
		if empty {
			return emptyStore(path)
		}
		if held {
			return nil
		}
	}
	unlock, err := lockShared(f, 0)
	if err != nil {
		return nil
	}
	defer unlock()
	fi, err := f.Stat()
	if err != nil || fi.Size() == 0 {
		return nil // emptied meanwhile: for the start to judge
	}
	// Read under the shared lock: the header again (the file may have
	// changed since it was read without one), the pages the check below
	// reads, then the top buckets, turning a fault on a damaged file
	// into an error.
	h, err := readBoltHeader(f, fi.Size())
	if err == nil {
		err = checkBoltTop(f, h)
	}
	if err != nil {
		return damaged(path, err)
	}
	ro, err := openGuarded(path, bolt.Options{ReadOnly: true, Timeout: 100 * time.Millisecond}, func(db *bolt.DB) error {
		return db.View(func(tx *bolt.Tx) error {
			if err := checkIsStore(tx); err != nil || secret == "" {
				return err
			}
			if root := tx.Bucket(rootBucket); root != nil {
				if bk := root.Bucket(bktSecrets); bk != nil {
					*v = clone(bk.Get([]byte(secret)))
				}
			}
			return nil
		})
	})
	if errors.Is(err, bolt.ErrTimeout) {
		return nil
	}
	if err != nil {
		if errors.Is(err, ErrDamaged) {
			return err
		}
		return fmt.Errorf("storage %s: %w", path, err)
	}
	return ro.Close()
}

// settledEmpty looks at f, a file found empty: empty reports that it is
// an empty file and not one being made, held that another process holds
// it (for lockTimeout). bbolt makes a store by creating the file, then
// locking it, then writing its first pages: an empty file that nobody
// holds may be between the first two steps. So an empty file counts as
// empty only once it has not changed for a second (waiting for that,
// without holding the lock that the maker is about to take).
func settledEmpty(f *os.File, lockTimeout time.Duration) (empty, held bool) {
	for range 30 {
		unlock, err := lockShared(f, lockTimeout)
		if err != nil {
			return false, true
		}
		fi, err := f.Stat()
		unlock()
		if err != nil || fi.Size() > 0 {
			return false, false
		}
		if age := time.Since(fi.ModTime()); age >= time.Second || age < -time.Minute {
			return true, false
		}
		time.Sleep(50 * time.Millisecond)
	}
	return true, false
}
