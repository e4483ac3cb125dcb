/*
 * simdrv.c - a simulated smart-card reader WDM driver, the test fixture of the
 * scardio Windows backend under Wine (and usable on a test-signing Windows).
 *
 * It implements the IOCTL contract of native/scio.h over the card model
 * of native/sim/card.c, plus the simulator's vendor codes SIM_CTL_INSERT and
 * SIM_CTL_REMOVE (Windows style SCARD_CTL_CODE(n)).
 *
 * Two ways to be installed:
 *   - legacy kernel service (sc create ... type= kernel): when the service key
 *     holds the DWORD value LegacyDevice = 1, DriverEntry creates the device
 *     \Device\ScardioSim0 and the link \DosDevices\ScardioSim0 (\\.\ScardioSim0);
 *   - root-enumerated PnP device (simdrv.inf): AddDevice creates an unnamed
 *     device, attaches it to the PDO and registers the smart-card reader
 *     interface, enabled on IRP_MN_START_DEVICE.
 *
 * The reader is exclusive, like smclib-based drivers: a second open fails with
 * STATUS_SHARING_VIOLATION.
 */
#include <ntddk.h>

#include "card.h"
#include "sim_protocol.h"

#define SC_CODE(n) CTL_CODE(FILE_DEVICE_SMARTCARD, (n), METHOD_BUFFERED, FILE_ANY_ACCESS)
#define IOC_POWER          SC_CODE(1)
#define IOC_GET_ATTRIBUTE  SC_CODE(2)
#define IOC_SET_ATTRIBUTE  SC_CODE(3)
#define IOC_CONFISCATE     SC_CODE(4)
#define IOC_TRANSMIT       SC_CODE(5)
#define IOC_EJECT          SC_CODE(6)
#define IOC_SWALLOW        SC_CODE(7)
#define IOC_IS_PRESENT     SC_CODE(10)
#define IOC_IS_ABSENT      SC_CODE(11)
#define IOC_SET_PROTOCOL   SC_CODE(12)
#define IOC_GET_STATE      SC_CODE(14)
#define IOC_GET_LAST_ERROR SC_CODE(15)
#define IOC_SIM_INSERT     SC_CODE(SIM_CTL_INSERT)
#define IOC_SIM_REMOVE     SC_CODE(SIM_CTL_REMOVE)

#define ST_ABSENT      1u
#define ST_SWALLOWED   3u
#define ST_NEGOTIABLE  5u
#define ST_SPECIFIC    6u

#define ATTR_VENDOR_NAME       0x00010100u
#define ATTR_VENDOR_IFD_TYPE   0x00010101u
#define ATTR_VENDOR_IFD_VER    0x00010102u
#define ATTR_CHARACTERISTICS   0x00060150u
#define ATTR_CURRENT_PROTOCOL  0x00080201u
#define ATTR_ATR_STRING        0x00090303u
#define ATTR_DEVICE_UNIT       0x7FFF0001u

#define PROTO_T0       0x00000001u
#define PROTO_T1       0x00000002u
#define PROTO_DEFAULT  0x80000000u

#define POOL_TAG 0x646D6953u /* 'Simd' */

/* {50DD5230-BA8A-11D1-BF5D-0000F805F530} */
static const GUID reader_iface_guid = {
    0x50DD5230, 0xBA8A, 0x11D1,
    { 0xBF, 0x5D, 0x00, 0x00, 0xF8, 0x05, 0xF5, 0x30 }
};

typedef struct sim_ext {
    KSPIN_LOCK lock;
    PDEVICE_OBJECT self;
    PDEVICE_OBJECT lower;        /* PnP only */
    UNICODE_STRING iface;        /* PnP only */
    int has_iface;
    int legacy;
    ULONG unit;
    PFILE_OBJECT owner;          /* the open file object (exclusive) */
    int present;
    int powered;
    ULONG protocol;              /* 0 none, PROTO_T0 or PROTO_T1 */
    PIRP tracking;               /* the one pended IS_PRESENT / IS_ABSENT */
    ULONG tracking_code;
    sim_card card;
} sim_ext;

static PDEVICE_OBJECT g_legacy_device;
static UNICODE_STRING g_legacy_link;
static LONG g_next_unit = 0;

static NTSTATUS complete(PIRP irp, NTSTATUS st, ULONG_PTR info)
{
    irp->IoStatus.Status = st;
    irp->IoStatus.Information = info;
    IoCompleteRequest(irp, IO_NO_INCREMENT);
    return st;
}

static ULONG get_u32(const UCHAR *p)
{
    return (ULONG)p[0] | ((ULONG)p[1] << 8) | ((ULONG)p[2] << 16) |
           ((ULONG)p[3] << 24);
}

static void put_u32(UCHAR *p, ULONG v)
{
    p[0] = (UCHAR)v;
    p[1] = (UCHAR)(v >> 8);
    p[2] = (UCHAR)(v >> 16);
    p[3] = (UCHAR)(v >> 24);
}

static ULONG card_state(const sim_ext *e)
{
    if (!e->present)
        return ST_ABSENT;
    if (!e->powered)
        return ST_SWALLOWED;
    return e->protocol ? ST_SPECIFIC : ST_NEGOTIABLE;
}

/* ---- card tracking ------------------------------------------------------ */

static VOID NTAPI tracking_cancel(PDEVICE_OBJECT dev, PIRP irp)
{
    sim_ext *e = (sim_ext *)dev->DeviceExtension;
    KIRQL irql;
    IoReleaseCancelSpinLock(irp->CancelIrql);
    KeAcquireSpinLock(&e->lock, &irql);
    if (e->tracking == irp)
        e->tracking = NULL;
    KeReleaseSpinLock(&e->lock, irql);
    complete(irp, STATUS_CANCELLED, 0);
}

/* Take the tracking request if `want` (or any, when 0) is satisfied.  The
 * caller completes what it gets.  Lock held. */
static PIRP take_tracking(sim_ext *e, ULONG want)
{
    PIRP irp = e->tracking;
    if (!irp || (want && e->tracking_code != want))
        return NULL;
    if (IoSetCancelRoutine(irp, NULL) == NULL)
        return NULL;             /* being cancelled: the routine completes it */
    e->tracking = NULL;
    return irp;
}

static NTSTATUS track(sim_ext *e, PIRP irp, ULONG code)
{
    KIRQL irql;
    int already;
    KeAcquireSpinLock(&e->lock, &irql);
    already = (code == IOC_IS_PRESENT) ? e->present : !e->present;
    if (already) {
        KeReleaseSpinLock(&e->lock, irql);
        return complete(irp, STATUS_SUCCESS, 0);
    }
    if (e->tracking) {
        KeReleaseSpinLock(&e->lock, irql);
        return complete(irp, STATUS_DEVICE_BUSY, 0);
    }
    IoMarkIrpPending(irp);
    e->tracking = irp;
    e->tracking_code = code;
    IoSetCancelRoutine(irp, tracking_cancel);
    if (irp->Cancel && IoSetCancelRoutine(irp, NULL) != NULL) {
        /* Cancelled before the routine was set: ours to complete. */
        e->tracking = NULL;
        KeReleaseSpinLock(&e->lock, irql);
        complete(irp, STATUS_CANCELLED, 0);
        return STATUS_PENDING;
    }
    KeReleaseSpinLock(&e->lock, irql);
    return STATUS_PENDING;
}

/* ---- IOCTLs ------------------------------------------------------------- */

static NTSTATUS do_get_attribute(sim_ext *e, UCHAR *buf, ULONG in_len,
                                 ULONG out_len, ULONG_PTR *info)
{
    static const char vendor[] = SIM_VENDOR_NAME;
    static const char ifd_type[] = SIM_IFD_TYPE;
    UCHAR val[SIM_CARD_MAX_ATR];
    size_t n = 0;
    ULONG tag;
    KIRQL irql;
    NTSTATUS st = STATUS_SUCCESS;

    if (in_len < 4 || !buf)
        return STATUS_INVALID_PARAMETER;
    tag = get_u32(buf);
    KeAcquireSpinLock(&e->lock, &irql);
    switch (tag) {
    case ATTR_VENDOR_NAME:
        n = sizeof(vendor) - 1;
        RtlCopyMemory(val, vendor, n);
        break;
    case ATTR_VENDOR_IFD_TYPE:
        n = sizeof(ifd_type) - 1;
        RtlCopyMemory(val, ifd_type, n);
        break;
    case ATTR_VENDOR_IFD_VER:
        put_u32(val, 0x01000000u);
        n = 4;
        break;
    case ATTR_DEVICE_UNIT:
        put_u32(val, e->unit);
        n = 4;
        break;
    case ATTR_CHARACTERISTICS:
        put_u32(val, 0);         /* no swallow / eject / confiscate */
        n = 4;
        break;
    case ATTR_CURRENT_PROTOCOL:
        put_u32(val, e->present && e->powered ? e->protocol : 0);
        n = 4;
        break;
    case ATTR_ATR_STRING:
        if (!e->present)
            st = STATUS_NO_MEDIA;
        else if (!e->powered)
            st = STATUS_INVALID_DEVICE_STATE;
        else {
            n = e->card.atr_len;
            if (n > sizeof(val))
                n = sizeof(val);
            RtlCopyMemory(val, e->card.atr, n);
        }
        break;
    default:
        st = STATUS_NOT_SUPPORTED;
        break;
    }
    KeReleaseSpinLock(&e->lock, irql);
    if (st != STATUS_SUCCESS)
        return st;
    if (out_len < n)
        return STATUS_BUFFER_TOO_SMALL;
    RtlCopyMemory(buf, val, n);
    *info = n;
    return STATUS_SUCCESS;
}

static NTSTATUS do_power(sim_ext *e, UCHAR *buf, ULONG in_len, ULONG out_len,
                         ULONG_PTR *info)
{
    ULONG action;
    KIRQL irql;
    NTSTATUS st = STATUS_SUCCESS;
    if (in_len < 4 || !buf)
        return STATUS_INVALID_PARAMETER;
    action = get_u32(buf);
    if (action > 2)
        return STATUS_INVALID_PARAMETER;
    KeAcquireSpinLock(&e->lock, &irql);
    if (!e->present) {
        st = STATUS_NO_MEDIA;
    } else if (action == 0) {
        e->powered = 0;
        e->protocol = 0;
    } else if (out_len < e->card.atr_len) {
        st = STATUS_BUFFER_TOO_SMALL;
    } else {
        sim_card_reset(&e->card);
        e->powered = 1;
        e->protocol = 0;
        RtlCopyMemory(buf, e->card.atr, e->card.atr_len);
        *info = e->card.atr_len;
    }
    KeReleaseSpinLock(&e->lock, irql);
    return st;
}

static NTSTATUS do_set_protocol(sim_ext *e, UCHAR *buf, ULONG in_len,
                                ULONG out_len, ULONG_PTR *info)
{
    ULONG want, offer, chosen;
    KIRQL irql;
    NTSTATUS st = STATUS_SUCCESS;
    if (in_len < 4 || !buf)
        return STATUS_INVALID_PARAMETER;
    if (out_len < 4)
        return STATUS_BUFFER_TOO_SMALL;
    want = get_u32(buf);
    KeAcquireSpinLock(&e->lock, &irql);
    if (!e->present) {
        st = STATUS_NO_MEDIA;
    } else if (!e->powered) {
        st = STATUS_INVALID_DEVICE_STATE;
    } else {
        offer = sim_card_protocols(&e->card, NULL);
        if ((want & ~PROTO_DEFAULT) == 0 || (want & PROTO_DEFAULT))
            want |= PROTO_T0 | PROTO_T1;         /* optimal / default */
        want &= offer;
        chosen = (want & PROTO_T1) ? PROTO_T1 : (want & PROTO_T0) ? PROTO_T0 : 0;
        if (!chosen) {
            st = STATUS_NOT_SUPPORTED;
        } else {
            e->protocol = chosen;
            sim_card_set_protocol(&e->card, chosen == PROTO_T1 ? 1 : 0);
            put_u32(buf, chosen);
            *info = 4;
        }
    }
    KeReleaseSpinLock(&e->lock, irql);
    return st;
}

static NTSTATUS do_transmit(sim_ext *e, UCHAR *buf, ULONG in_len,
                            ULONG out_len, ULONG_PTR *info)
{
    ULONG proto, pci;
    size_t apdu_len, need;
    UCHAR *apdu;
    KIRQL irql;
    NTSTATUS st = STATUS_SUCCESS;

    if (in_len < 8 || !buf)
        return STATUS_INVALID_PARAMETER;
    proto = get_u32(buf);
    pci = get_u32(buf + 4);
    if (pci < 8 || pci > in_len || in_len - pci < 4)
        return STATUS_INVALID_PARAMETER;
    if (out_len < 8)
        return STATUS_BUFFER_TOO_SMALL;
    apdu_len = in_len - pci;
    /* Input and output share the system buffer: copy the command out. */
    apdu = (UCHAR *)ExAllocatePoolWithTag(NonPagedPool, apdu_len, POOL_TAG);
    if (!apdu)
        return STATUS_INSUFFICIENT_RESOURCES;
    RtlCopyMemory(apdu, buf + pci, apdu_len);
    KeAcquireSpinLock(&e->lock, &irql);
    if (!e->present) {
        st = STATUS_NO_MEDIA;
    } else if (!e->powered || !e->protocol || proto != e->protocol) {
        st = STATUS_INVALID_DEVICE_STATE;
    } else {
        need = sim_card_process(&e->card, apdu, apdu_len, buf + 8, out_len - 8);
        if (need > out_len - 8) {
            st = STATUS_BUFFER_TOO_SMALL;
        } else {
            put_u32(buf, e->protocol);
            put_u32(buf + 4, 8);
            *info = 8 + need;
        }
    }
    KeReleaseSpinLock(&e->lock, irql);
    ExFreePoolWithTag(apdu, POOL_TAG);
    return st;
}

static NTSTATUS do_insert(sim_ext *e, const UCHAR *buf, ULONG in_len)
{
    static const UCHAR atr_t1[] = SIM_ATR_T1;
    static const UCHAR atr_t0[] = SIM_ATR_T0;
    UCHAR atr[SIM_CARD_MAX_ATR];
    size_t n;
    KIRQL irql;
    PIRP done;

    if (in_len > 0 && !buf)
        return STATUS_INVALID_PARAMETER;
    if (in_len == 0 || (in_len == 1 && buf[0] == SIM_CARD_T1)) {
        n = sizeof(atr_t1);
        RtlCopyMemory(atr, atr_t1, n);
    } else if (in_len == 1 && buf[0] == SIM_CARD_T0) {
        n = sizeof(atr_t0);
        RtlCopyMemory(atr, atr_t0, n);
    } else if (in_len >= 2 && in_len <= SIM_CARD_MAX_ATR) {
        n = in_len;
        RtlCopyMemory(atr, buf, n);
    } else {
        return STATUS_INVALID_PARAMETER;
    }
    KeAcquireSpinLock(&e->lock, &irql);
    sim_card_init(&e->card, atr, n);
    e->present = 1;
    e->powered = 0;
    e->protocol = 0;
    done = take_tracking(e, IOC_IS_PRESENT);
    KeReleaseSpinLock(&e->lock, irql);
    if (done)
        complete(done, STATUS_SUCCESS, 0);
    return STATUS_SUCCESS;
}

static NTSTATUS do_remove(sim_ext *e)
{
    KIRQL irql;
    PIRP done;
    KeAcquireSpinLock(&e->lock, &irql);
    e->present = 0;
    e->powered = 0;
    e->protocol = 0;
    done = take_tracking(e, IOC_IS_ABSENT);
    KeReleaseSpinLock(&e->lock, irql);
    if (done)
        complete(done, STATUS_SUCCESS, 0);
    return STATUS_SUCCESS;
}

static NTSTATUS NTAPI dispatch_ioctl(PDEVICE_OBJECT dev, PIRP irp)
{
    sim_ext *e = (sim_ext *)dev->DeviceExtension;
    PIO_STACK_LOCATION sp = IoGetCurrentIrpStackLocation(irp);
    ULONG code = sp->Parameters.DeviceIoControl.IoControlCode;
    ULONG in_len = sp->Parameters.DeviceIoControl.InputBufferLength;
    ULONG out_len = sp->Parameters.DeviceIoControl.OutputBufferLength;
    UCHAR *buf = (UCHAR *)irp->AssociatedIrp.SystemBuffer;
    ULONG_PTR info = 0;
    NTSTATUS st;
    KIRQL irql;

    switch (code) {
    case IOC_GET_STATE:
        if (out_len < 4 || !buf) {
            st = STATUS_BUFFER_TOO_SMALL;
            break;
        }
        KeAcquireSpinLock(&e->lock, &irql);
        put_u32(buf, card_state(e));
        KeReleaseSpinLock(&e->lock, irql);
        info = 4;
        st = STATUS_SUCCESS;
        break;
    case IOC_GET_LAST_ERROR:
        if (out_len < 4 || !buf) {
            st = STATUS_BUFFER_TOO_SMALL;
            break;
        }
        put_u32(buf, 0);
        info = 4;
        st = STATUS_SUCCESS;
        break;
    case IOC_GET_ATTRIBUTE:
        st = do_get_attribute(e, buf, in_len, out_len, &info);
        break;
    case IOC_POWER:
        st = do_power(e, buf, in_len, out_len, &info);
        break;
    case IOC_SET_PROTOCOL:
        st = do_set_protocol(e, buf, in_len, out_len, &info);
        break;
    case IOC_TRANSMIT:
        st = do_transmit(e, buf, in_len, out_len, &info);
        break;
    case IOC_IS_PRESENT:
    case IOC_IS_ABSENT:
        return track(e, irp, code);
    case IOC_SET_ATTRIBUTE:
    case IOC_CONFISCATE:
    case IOC_EJECT:
    case IOC_SWALLOW:
        st = STATUS_NOT_SUPPORTED;
        break;
    case IOC_SIM_INSERT:
        st = do_insert(e, buf, in_len);
        break;
    case IOC_SIM_REMOVE:
        st = do_remove(e);
        break;
    default:
        st = STATUS_INVALID_DEVICE_REQUEST;
        break;
    }
    return complete(irp, st, NT_SUCCESS(st) ? info : 0);
}

/* ---- create / close / cleanup ------------------------------------------ */

/* Exclusive: the file object that opened the reader owns it until its
 * IRP_MJ_CLOSE.  (Wine 8 does not wait for this IRP's status: there a
 * refused open still yields a handle, whose close then does not release the
 * owner's claim.) */
static NTSTATUS NTAPI dispatch_create(PDEVICE_OBJECT dev, PIRP irp)
{
    sim_ext *e = (sim_ext *)dev->DeviceExtension;
    PFILE_OBJECT fo = IoGetCurrentIrpStackLocation(irp)->FileObject;
    NTSTATUS st = STATUS_SUCCESS;
    KIRQL irql;
    KeAcquireSpinLock(&e->lock, &irql);
    if (e->owner)
        st = STATUS_SHARING_VIOLATION;
    else
        e->owner = fo ? fo : (PFILE_OBJECT)(ULONG_PTR)1;
    KeReleaseSpinLock(&e->lock, irql);
    return complete(irp, st, 0);
}

static NTSTATUS NTAPI dispatch_close(PDEVICE_OBJECT dev, PIRP irp)
{
    sim_ext *e = (sim_ext *)dev->DeviceExtension;
    PFILE_OBJECT fo = IoGetCurrentIrpStackLocation(irp)->FileObject;
    KIRQL irql;
    KeAcquireSpinLock(&e->lock, &irql);
    if (e->owner == fo || e->owner == (PFILE_OBJECT)(ULONG_PTR)1)
        e->owner = NULL;
    KeReleaseSpinLock(&e->lock, irql);
    return complete(irp, STATUS_SUCCESS, 0);
}

/* Windows sends this when the last handle goes; Wine 8 never does. */
static NTSTATUS NTAPI dispatch_cleanup(PDEVICE_OBJECT dev, PIRP irp)
{
    sim_ext *e = (sim_ext *)dev->DeviceExtension;
    PIO_STACK_LOCATION sp = IoGetCurrentIrpStackLocation(irp);
    PIRP done = NULL;
    KIRQL irql;
    KeAcquireSpinLock(&e->lock, &irql);
    if (e->tracking &&
        IoGetCurrentIrpStackLocation(e->tracking)->FileObject == sp->FileObject)
        done = take_tracking(e, 0);
    KeReleaseSpinLock(&e->lock, irql);
    if (done)
        complete(done, STATUS_CANCELLED, 0);
    return complete(irp, STATUS_SUCCESS, 0);
}

/* ---- PnP ---------------------------------------------------------------- */

static void ext_init(sim_ext *e, PDEVICE_OBJECT self, int legacy, ULONG unit)
{
    RtlZeroMemory(e, sizeof(*e));
    KeInitializeSpinLock(&e->lock);
    e->self = self;
    e->legacy = legacy;
    e->unit = unit;
    sim_card_init(&e->card, NULL, 0);
}

static NTSTATUS NTAPI start_done(PDEVICE_OBJECT dev, PIRP irp, PVOID ctx)
{
    (void)dev;
    (void)irp;
    KeSetEvent((PKEVENT)ctx, IO_NO_INCREMENT, FALSE);
    return STATUS_MORE_PROCESSING_REQUIRED;
}

static NTSTATUS NTAPI dispatch_pnp(PDEVICE_OBJECT dev, PIRP irp)
{
    sim_ext *e = (sim_ext *)dev->DeviceExtension;
    PIO_STACK_LOCATION sp = IoGetCurrentIrpStackLocation(irp);
    NTSTATUS st;
    KIRQL irql;
    PIRP done;

    if (!e->lower)
        return complete(irp, irp->IoStatus.Status, irp->IoStatus.Information);

    switch (sp->MinorFunction) {
    case IRP_MN_START_DEVICE: {
        KEVENT ev;
        KeInitializeEvent(&ev, NotificationEvent, FALSE);
        IoCopyCurrentIrpStackLocationToNext(irp);
        IoSetCompletionRoutine(irp, start_done, &ev, TRUE, TRUE, TRUE);
        st = IoCallDriver(e->lower, irp);
        if (st == STATUS_PENDING) {
            KeWaitForSingleObject(&ev, Executive, KernelMode, FALSE, NULL);
            st = irp->IoStatus.Status;
        }
        /* Root PDOs may leave the status untouched: treat as success. */
        if (st == STATUS_NOT_SUPPORTED)
            st = STATUS_SUCCESS;
        if (NT_SUCCESS(st) && e->has_iface)
            IoSetDeviceInterfaceState(&e->iface, TRUE);
        return complete(irp, st, 0);
    }
    case IRP_MN_SURPRISE_REMOVAL:
    case IRP_MN_REMOVE_DEVICE: {
        int remove = sp->MinorFunction == IRP_MN_REMOVE_DEVICE;
        PDEVICE_OBJECT lower = e->lower;
        if (e->has_iface)
            IoSetDeviceInterfaceState(&e->iface, FALSE);
        KeAcquireSpinLock(&e->lock, &irql);
        done = take_tracking(e, 0);
        KeReleaseSpinLock(&e->lock, irql);
        if (done)
            complete(done, STATUS_DEVICE_NOT_CONNECTED, 0);
        irp->IoStatus.Status = STATUS_SUCCESS;
        IoSkipCurrentIrpStackLocation(irp);
        st = IoCallDriver(lower, irp);
        if (remove) {
            IoDetachDevice(lower);
            if (e->has_iface) {
                RtlFreeUnicodeString(&e->iface);
                e->has_iface = 0;
            }
            IoDeleteDevice(dev);
        }
        return st;
    }
    case IRP_MN_QUERY_REMOVE_DEVICE:
    case IRP_MN_CANCEL_REMOVE_DEVICE:
    case IRP_MN_QUERY_STOP_DEVICE:
    case IRP_MN_CANCEL_STOP_DEVICE:
    case IRP_MN_STOP_DEVICE:
        irp->IoStatus.Status = STATUS_SUCCESS;
        break;
    default:
        break;
    }
    IoSkipCurrentIrpStackLocation(irp);
    return IoCallDriver(e->lower, irp);
}

static NTSTATUS NTAPI add_device(PDRIVER_OBJECT drv, PDEVICE_OBJECT pdo)
{
    PDEVICE_OBJECT fdo;
    sim_ext *e;
    NTSTATUS st;

    st = IoCreateDevice(drv, sizeof(sim_ext), NULL, FILE_DEVICE_SMARTCARD,
                        FILE_DEVICE_SECURE_OPEN, FALSE, &fdo);
    if (!NT_SUCCESS(st))
        return st;
    e = (sim_ext *)fdo->DeviceExtension;
    /* PnP readers are units 1, 2, ...; the legacy one is unit 0. */
    ext_init(e, fdo, 0, (ULONG)InterlockedIncrement(&g_next_unit));
    e->lower = IoAttachDeviceToDeviceStack(fdo, pdo);
    if (!e->lower) {
        IoDeleteDevice(fdo);
        return STATUS_NO_SUCH_DEVICE;
    }
    st = IoRegisterDeviceInterface(pdo, &reader_iface_guid, NULL, &e->iface);
    if (NT_SUCCESS(st))
        e->has_iface = 1;
    fdo->Flags |= DO_BUFFERED_IO;
    fdo->Flags &= ~DO_DEVICE_INITIALIZING;
    return STATUS_SUCCESS;
}

/* ---- entry -------------------------------------------------------------- */

static int read_legacy_flag(PUNICODE_STRING registry_path)
{
    OBJECT_ATTRIBUTES oa;
    UNICODE_STRING name;
    HANDLE key;
    union {
        KEY_VALUE_PARTIAL_INFORMATION info;
        UCHAR raw[sizeof(KEY_VALUE_PARTIAL_INFORMATION) + 16];
    } v;
    ULONG got = 0;
    int legacy = 0;

    InitializeObjectAttributes(&oa, registry_path,
                               OBJ_CASE_INSENSITIVE | OBJ_KERNEL_HANDLE,
                               NULL, NULL);
    if (!NT_SUCCESS(ZwOpenKey(&key, KEY_READ, &oa)))
        return 0;
    RtlInitUnicodeString(&name, L"LegacyDevice");
    if (NT_SUCCESS(ZwQueryValueKey(key, &name, KeyValuePartialInformation,
                                   &v, sizeof(v), &got)) &&
        v.info.Type == REG_DWORD && v.info.DataLength >= 4 &&
        got >= FIELD_OFFSET(KEY_VALUE_PARTIAL_INFORMATION, Data) + 4)
        legacy = get_u32(v.info.Data) != 0;
    ZwClose(key);
    return legacy;
}

static VOID NTAPI driver_unload(PDRIVER_OBJECT drv)
{
    (void)drv;
    if (g_legacy_device) {
        sim_ext *e = (sim_ext *)g_legacy_device->DeviceExtension;
        KIRQL irql;
        PIRP done;
        KeAcquireSpinLock(&e->lock, &irql);
        done = take_tracking(e, 0);
        KeReleaseSpinLock(&e->lock, irql);
        if (done)
            complete(done, STATUS_DEVICE_NOT_CONNECTED, 0);
        IoDeleteSymbolicLink(&g_legacy_link);
        IoDeleteDevice(g_legacy_device);
        g_legacy_device = NULL;
    }
}

NTSTATUS NTAPI DriverEntry(PDRIVER_OBJECT drv, PUNICODE_STRING registry_path)
{
    UNICODE_STRING devname;
    NTSTATUS st;

    drv->MajorFunction[IRP_MJ_CREATE] = dispatch_create;
    drv->MajorFunction[IRP_MJ_CLOSE] = dispatch_close;
    drv->MajorFunction[IRP_MJ_CLEANUP] = dispatch_cleanup;
    drv->MajorFunction[IRP_MJ_DEVICE_CONTROL] = dispatch_ioctl;
    drv->MajorFunction[IRP_MJ_PNP] = dispatch_pnp;
    drv->DriverExtension->AddDevice = add_device;
    drv->DriverUnload = driver_unload;

    if (!read_legacy_flag(registry_path))
        return STATUS_SUCCESS;

    RtlInitUnicodeString(&devname, L"\\Device\\ScardioSim0");
    RtlInitUnicodeString(&g_legacy_link, L"\\DosDevices\\ScardioSim0");
    st = IoCreateDevice(drv, sizeof(sim_ext), &devname, FILE_DEVICE_SMARTCARD,
                        FILE_DEVICE_SECURE_OPEN, FALSE, &g_legacy_device);
    if (!NT_SUCCESS(st))
        return st;
    ext_init((sim_ext *)g_legacy_device->DeviceExtension, g_legacy_device, 1, 0);
    g_legacy_device->Flags |= DO_BUFFERED_IO;
    g_legacy_device->Flags &= ~DO_DEVICE_INITIALIZING;
    st = IoCreateSymbolicLink(&g_legacy_link, &devname);
    if (!NT_SUCCESS(st)) {
        IoDeleteDevice(g_legacy_device);
        g_legacy_device = NULL;
        return st;
    }
    return STATUS_SUCCESS;
}
