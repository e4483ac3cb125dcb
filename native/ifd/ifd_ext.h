/*
 * ifd_ext.h - scardio's IFD-handler extensions: optional capabilities any
 * driver may offer through IFDHGetCapabilities, beside the standard tags.
 *
 * A driver that does not know a tag answers IFD_ERROR_TAG, as for any
 * unknown tag; the backend then does without.  The backend asks each tag
 * once, right after IFDHCreateChannel(ByName) succeeds (as it asks
 * TAG_IFD_THREAD_SAFE), with the reader's call lock held.  Integers are
 * 32-bit little-endian whatever the platform's DWORD.  A value that fails
 * the checks described below is ignored (the backend logs why through
 * scio_set_log's callback) and the reader works as without the extension.
 *
 * The tags sit in the vendor-defined class (7) of SCARD_ATTR_VALUE.
 */
#ifndef SCIO_IFD_EXT_H
#define SCIO_IFD_EXT_H

/*
 * Card-event counts.
 *
 * Value: 8 bytes, u32 insertions then u32 removals: how many times a card
 * arrived in / left this reader (LUN) since the channel was opened, counted
 * modulo 2^32 and never reset while the channel is open.  A card swapped for
 * another is one removal and one insertion.  Both counts must come from one
 * snapshot (taken under the driver's own lock).
 *
 * Read: once at open (the starting point: events before it are not
 * reported); then, with the reader's call lock held, on every step of a
 * tracking request (IS_PRESENT / IS_ABSENT) that asks the driver and after
 * every presence check.  (Without a polling function a step may be skipped
 * when the reader's own calls just found the card in, unless the counts
 * last read show an event not yet reported.)  And without the call lock:
 * for a reader without a polling function, once a step has asked presence,
 * read the counts after it and left the request waiting with every event
 * they show reported, each following step (one per poll interval) reads
 * the counts alone, without any lock of the backend's -- concurrently with
 * any other call of the driver, on this reader or another (but never with
 * closing this reader's channel, which waits for the request) -- and asks
 * presence again (a full step, under the lock) only once they differ from
 * what that step read.  A driver that offers the counts serves this read at
 * any time, from its own state and at once.
 *
 * Semantics: each tracking request completes on one counted event, so a
 * card that comes and goes faster than requests are made is still reported
 * as every arrival and departure, in order, exactly once; and a card seen
 * again after an insertion the backend did not witness is taken for a new,
 * unpowered card (its power and protocol are forgotten).  Counts standing
 * still are taken to mean that the card is where the last presence check
 * found it: a driver counts every arrival and departure IFDHICCPresence
 * reports, no later than it reports it.  (An answer that follows events
 * counted but not reported yet, such as "absent" after a swap for hosts
 * that do not count, is fine: every step that reports an event asks
 * presence.)
 *
 * Checks: neither count may go back, and since one slot alternates arrivals
 * and departures, the counts may never drift apart by more than one from
 * where they stood at open.  A driver that breaks either rule has a bug: the
 * backend logs it once, stops reading the counts for this reader, and tracks
 * the card by its presence alone (no event is made up from the bad values).
 */
#define SCIO_IFD_TAG_CARD_EVENTS 0x0007A002u

/*
 * Card-event generation (optional; only with the card-event counts).
 *
 * Value: 4 bytes, u32: a number the driver library bumps (by one, modulo
 * 2^32) on every change of any of its readers' card-event counts (a swap
 * that moves both of a reader's counts at once may be one bump) -- one
 * counter for the whole library as loaded in this process, whichever of
 * its open LUNs it is read through.  It says nothing by its value, only by
 * moving: a host that watches many readers reads it once per poll interval
 * and reads their counts only when it moved.
 *
 * Ordering: a driver bumps it after the counts it covers have changed,
 * such that a read of the counts made after a read of the generation that
 * saw the bump sees the new counts (the bump a release operation, or made
 * under the lock the counts are read under; the read an acquire).  Then a
 * count change that a count read made after a read of the generation did
 * not see bumps the generation past the value that read returned: while
 * later reads return that same value, every count read made after it
 * still stands.
 * (2^32 bumps between two reads of one host would defeat this; at poll
 * intervals that cannot happen.)
 *
 * Read: once per reader at open, beside the counts (a reader whose driver
 * answers the generation but not the counts ignores it); then by a host
 * that tracks readers without a polling function, once per poll interval,
 * through the LUN of any reader it tracks, without any lock of the
 * backend's and concurrently with any other call of the driver (but never
 * with closing the LUN it is read through).  Like the counts it is served
 * at any time, from the driver's own state and at once.
 *
 * Semantics: while the generation stands still, a host takes every count
 * it read since the first of the reads to show that value as still
 * standing, and reads none; once it moves, the host reads every tracked
 * reader's counts again.  Nothing else changes: events are reported as the
 * counts show them (above).  The backend cannot check the generation: a
 * driver that misses a bump hides that card event from a waiting tracking
 * request until the generation next moves or a call on the reader reads
 * its counts.  Drivers without it are read as before: each tracked reader's
 * counts every poll interval.
 */
#define SCIO_IFD_TAG_CARD_EVENT_GENERATION 0x0007A004u

/*
 * Vendor controls served without the reader lock.
 *
 * Value: 8 bytes, u32 first then u32 last: an inclusive range of IFDHControl
 * codes (as the driver receives them: pcsc-lite style, 0x42000000 + n) that
 * the driver serves concurrently with any of its other calls on the reader,
 * including one that is blocked inside the driver.  Typical use: test or
 * diagnostic controls that must get through while a call hangs.
 *
 * Read: once at open.  Semantics: a vendor IOCTL whose code falls in the
 * range (a Windows-style SCARD_CTL_CODE(n) counts as 0x42000000 + n) goes to
 * IFDHControl at once, without the reader's call lock (nor the driver
 * library's, for a driver that is not thread safe); every other code waits
 * for the lock as usual.
 *
 * Checks: first <= last, and both within the vendor control space
 * 0x42000000..0x42FFFFFF; a range that is not (backwards, or reaching into
 * the standard IOCTL space) is ignored, with a log message, and every
 * control takes the lock.
 */
#define SCIO_IFD_TAG_UNLOCKED_CONTROLS 0x0007A003u

/* The vendor control space the unlocked range must lie in. */
#define SCIO_IFD_VENDOR_CTL_FIRST 0x42000000u
#define SCIO_IFD_VENDOR_CTL_LAST  0x42FFFFFFu

#endif /* SCIO_IFD_EXT_H */
