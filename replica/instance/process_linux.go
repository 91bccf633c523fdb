package instance

import (
	"os/signal"
	"unsafe"

	"golang.org/x/sys/unix"
)

var (
	signalNotify = signal.Notify
	signalStop   = signal.Stop
)

type siginfo struct{ pid int }

// waitidPeek reports a child that has exited, without reaping it.
func waitidPeek(info *siginfo) error {
	var si unix.Siginfo
	err := unix.Waitid(unix.P_ALL, 0, &si, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil)
	if err != nil {
		return err
	}
	// si_pid follows si_signo, si_errno and si_code (three int32s) and
	// padding on 64-bit Linux.
	info.pid = int(*(*int32)(unsafe.Pointer(uintptr(unsafe.Pointer(&si)) + 16))) //nolint:gosec // G103: siginfo_t's si_pid, read as waitid(2) fills it
	return nil
}
