package oss

import "fmt"

// SizeText writes n bytes for an operator, with one decimal and a binary
// unit ("512 B", "1.5 KiB", "3.9 GiB"): how OS files, their copies and
// the boot client's size are shown wherever the appliance speaks of them.
func SizeText(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
