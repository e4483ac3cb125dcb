/* status.c - names of the core's status values (shared by every backend). */
#include "scio.h"

const char *scio_status_name(scio_status status)
{
    switch (status) {
    case SCIO_SUCCESS: return "SUCCESS";
    case SCIO_PENDING: return "PENDING";
    case SCIO_UNSUCCESSFUL: return "UNSUCCESSFUL";
    case SCIO_NOT_IMPLEMENTED: return "NOT_IMPLEMENTED";
    case SCIO_INVALID_PARAMETER: return "INVALID_PARAMETER";
    case SCIO_NO_SUCH_DEVICE: return "NO_SUCH_DEVICE";
    case SCIO_INVALID_DEVICE_REQUEST: return "INVALID_DEVICE_REQUEST";
    case SCIO_UNRECOGNIZED_MEDIA: return "UNRECOGNIZED_MEDIA";
    case SCIO_NO_MEMORY: return "NO_MEMORY";
    case SCIO_BUFFER_TOO_SMALL: return "BUFFER_TOO_SMALL";
    case SCIO_OBJECT_NAME_NOT_FOUND: return "OBJECT_NAME_NOT_FOUND";
    case SCIO_SHARING_VIOLATION: return "SHARING_VIOLATION";
    case SCIO_INVALID_IMAGE_FORMAT: return "INVALID_IMAGE_FORMAT";
    case SCIO_INSUFFICIENT_RESOURCES: return "INSUFFICIENT_RESOURCES";
    case SCIO_DEVICE_NOT_CONNECTED: return "DEVICE_NOT_CONNECTED";
    case SCIO_DEVICE_BUSY: return "DEVICE_BUSY";
    case SCIO_IO_TIMEOUT: return "IO_TIMEOUT";
    case SCIO_NOT_SUPPORTED: return "NOT_SUPPORTED";
    case SCIO_CANCELLED: return "CANCELLED";
    case SCIO_DLL_NOT_FOUND: return "DLL_NOT_FOUND";
    case SCIO_ENTRYPOINT_NOT_FOUND: return "ENTRYPOINT_NOT_FOUND";
    case SCIO_NO_MEDIA: return "NO_MEDIA";
    case SCIO_INVALID_DEVICE_STATE: return "INVALID_DEVICE_STATE";
    case SCIO_POSSIBLE_DEADLOCK: return "POSSIBLE_DEADLOCK";
    case SCIO_IO_DEVICE_ERROR: return "IO_DEVICE_ERROR";
    case SCIO_INVALID_BUFFER_SIZE: return "INVALID_BUFFER_SIZE";
    case SCIO_DEVICE_DATA_ERROR: return "DEVICE_DATA_ERROR";
    case SCIO_NO_SERVICE: return "NO_SERVICE";
    default: return NULL;
    }
}
