// SPDX-License-Identifier: GPL-2.0
/*
 * vmshm: map part of a host POSIX shared-memory object into a guest process.
 *
 * The device (PCI 1af4:6661) has three BARs, found through its vendor-specific
 * capability: registers (OPEN and CLOSE are read-to-trigger), a window onto
 * the host object, and a buffer for the object's name.  Each device becomes
 * /dev/vmshmN:
 *
 *   open()              exclusive; a second open is -EBUSY; clears pending
 *                       interrupts and unmasks every vector (INTR_MASK)
 *   ioctl(fd, 0, name)  write name into the name BAR, read OPEN, return -status
 *   ioctl RING, db      write db (peer << 16 | vector) to DOORBELL
 *   ioctl IVPOSITION    return IVPOSITION, or -ENXIO while it has none
 *   read(fd, &n, 4)     wait for an interrupt; n is the count since the last
 *                       read (-EAGAIN with O_NONBLOCK), as UIO does
 *   poll()              EPOLLIN once an interrupt came
 *   mmap()              map the window uncached, at most MAP_SIZE bytes
 *   release             mask every vector, read CLOSE
 *
 * The interrupt is the function's one vector: MSI where the platform carries
 * it, else INTx (QEMU's PCI proxy carries only INTx; msi=0 forces it).  The
 * handler shares the line, claims only what INTR_STATUS & INTR_MASK holds and
 * clears it (write 1 to clear) before the line can fire again.
 */

#include <linux/atomic.h>
#include <linux/bitops.h>
#include <linux/fs.h>
#include <linux/idr.h>
#include <linux/interrupt.h>
#include <linux/io.h>
#include <linux/kref.h>
#include <linux/miscdevice.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/pci.h>
#include <linux/poll.h>
#include <linux/slab.h>
#include <linux/uaccess.h>
#include <linux/wait.h>

#include "vmshm_ioctl.h"
#include "vmshm_regs.h"

/* Every vector the device has (v < 32) is enabled while the file is open. */
#define VMSHM_ALL_VECTORS	0xffffffff
/* IVPOSITION while the host has no peer ID. */
#define VMSHM_NO_POSITION	0xffffffff

static bool msi = true;
module_param(msi, bool, 0444);
MODULE_PARM_DESC(msi, "use MSI where the device offers it (default: yes)");

/*
 * One per function.  An open file holds a reference, so the structure
 * outlives a function removed while its file is open; "gone" (under lock)
 * tells the file operations the BARs are no longer there.
 */
struct vmshm_dev {
	struct kref ref;
	struct pci_dev *pdev;
	void __iomem *regs;
	void __iomem *names;
	resource_size_t window_start;
	u32 window_size;
	u32 name_size;
	unsigned long busy;		/* bit 0: the file is open */
	struct mutex lock;		/* serialises OPEN, CLOSE and removal */
	bool gone;			/* the function was removed */
	bool has_irq;			/* the function has an interrupt */
	u32 mask;			/* INTR_MASK, as the handler sees it */
	atomic_t count;			/* interrupts since the last read */
	wait_queue_head_t wait;		/* readers and pollers */
	int id;
	char devname[16];
	struct miscdevice misc;
};

static DEFINE_IDA(vmshm_ida);

static void vmshm_free(struct kref *ref)
{
	kfree(container_of(ref, struct vmshm_dev, ref));
}

static void vmshm_put(void *data)
{
	struct vmshm_dev *vdev = data;

	kref_put(&vdev->ref, vmshm_free);
}

static irqreturn_t vmshm_irq(int irq, void *data)
{
	struct vmshm_dev *vdev = data;
	u32 pending;

	/*
	 * The mask is the one this driver wrote, so one register read per
	 * interrupt: each read is a round trip to the device.
	 */
	pending = ioread32(vdev->regs + VMSHM_REG_INTR_STATUS) &
		  READ_ONCE(vdev->mask);
	if (!pending)
		return IRQ_NONE;
	/* Clear before waking, so a ring that comes after is not lost. */
	iowrite32(pending, vdev->regs + VMSHM_REG_INTR_STATUS);
	atomic_inc(&vdev->count);
	wake_up_interruptible(&vdev->wait);
	return IRQ_HANDLED;
}

/*
 * Write INTR_MASK; the handler must see the new mask before the line can.
 * A device without an interrupt (before ABI 1.2) has no such register.
 */
static void vmshm_set_mask(struct vmshm_dev *vdev, u32 mask)
{
	if (!vdev->has_irq)
		return;
	WRITE_ONCE(vdev->mask, mask);
	iowrite32(mask, vdev->regs + VMSHM_REG_INTR_MASK);
}

static int vmshm_open(struct inode *inode, struct file *file)
{
	struct vmshm_dev *vdev = container_of(file->private_data,
					      struct vmshm_dev, misc);

	/* misc_open() holds misc_mtx, so removal cannot run under us. */
	if (test_and_set_bit(0, &vdev->busy))
		return -EBUSY;
	kref_get(&vdev->ref);
	file->private_data = vdev;
	/* Interrupts count from here: what rang while closed is cleared. */
	mutex_lock(&vdev->lock);
	if (vdev->has_irq)
		iowrite32(VMSHM_ALL_VECTORS,
			  vdev->regs + VMSHM_REG_INTR_STATUS);
	atomic_set(&vdev->count, 0);
	vmshm_set_mask(vdev, VMSHM_ALL_VECTORS);
	mutex_unlock(&vdev->lock);
	return 0;
}

static int vmshm_release(struct inode *inode, struct file *file)
{
	struct vmshm_dev *vdev = file->private_data;

	/* Runs once the last reference goes: the fd and every mapping. */
	mutex_lock(&vdev->lock);
	if (!vdev->gone) {
		vmshm_set_mask(vdev, 0);
		ioread32(vdev->regs + VMSHM_REG_CLOSE);
	}
	mutex_unlock(&vdev->lock);
	clear_bit(0, &vdev->busy);
	vmshm_put(vdev);
	return 0;
}

static ssize_t vmshm_read(struct file *file, char __user *buf, size_t count,
			  loff_t *ppos)
{
	struct vmshm_dev *vdev = file->private_data;
	u32 n;
	int ret;

	if (count != sizeof(n))
		return -EINVAL;
	if (!vdev->has_irq)
		return -EOPNOTSUPP;
	for (;;) {
		n = atomic_xchg(&vdev->count, 0);
		if (n)
			break;
		if (READ_ONCE(vdev->gone))
			return -ENODEV;
		if (file->f_flags & O_NONBLOCK)
			return -EAGAIN;
		ret = wait_event_interruptible(vdev->wait,
					       atomic_read(&vdev->count) ||
					       READ_ONCE(vdev->gone));
		if (ret)
			return ret;
	}
	if (copy_to_user(buf, &n, sizeof(n))) {
		/* Not delivered: keep it for the next read. */
		atomic_add(n, &vdev->count);
		return -EFAULT;
	}
	return sizeof(n);
}

static __poll_t vmshm_poll(struct file *file, poll_table *wait)
{
	struct vmshm_dev *vdev = file->private_data;

	poll_wait(file, &vdev->wait, wait);
	if (atomic_read(&vdev->count))
		return EPOLLIN | EPOLLRDNORM;
	if (READ_ONCE(vdev->gone) || !vdev->has_irq)
		return EPOLLERR | EPOLLHUP;
	return 0;
}

static long vmshm_ioctl_ring(struct vmshm_dev *vdev, unsigned long db)
{
	if (db > U32_MAX)
		return -EINVAL;
	mutex_lock(&vdev->lock);
	if (vdev->gone) {
		mutex_unlock(&vdev->lock);
		return -ENODEV;
	}
	iowrite32(db, vdev->regs + VMSHM_REG_DOORBELL);
	mutex_unlock(&vdev->lock);
	return 0;
}

static long vmshm_ioctl_ivposition(struct vmshm_dev *vdev)
{
	u32 pos = VMSHM_NO_POSITION;
	bool gone;

	mutex_lock(&vdev->lock);
	gone = vdev->gone;
	if (!gone)
		pos = ioread32(vdev->regs + VMSHM_REG_IVPOSITION);
	mutex_unlock(&vdev->lock);
	if (gone)
		return -ENODEV;
	if (pos > 0xffff)
		return -ENXIO;
	return pos;
}

static long vmshm_ioctl_open(struct vmshm_dev *vdev, const char __user *uname)
{
	char *name;
	long len;
	u32 status;

	name = kmalloc(vdev->name_size, GFP_KERNEL);
	if (!name)
		return -ENOMEM;
	len = strncpy_from_user(name, uname, vdev->name_size);
	if (len < 0)
		goto out;
	if (len == vdev->name_size) {
		/* No room for the NUL: write nothing. */
		len = -ENAMETOOLONG;
		goto out;
	}
	mutex_lock(&vdev->lock);
	if (vdev->gone) {
		mutex_unlock(&vdev->lock);
		len = -ENODEV;
		goto out;
	}
	memcpy_toio(vdev->names, name, len + 1);
	status = ioread32(vdev->regs + VMSHM_REG_OPEN);
	mutex_unlock(&vdev->lock);
	if (status >= MAX_ERRNO)
		len = -EIO;
	else
		len = -(long)status;
out:
	kfree(name);
	return len;
}

static long vmshm_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	struct vmshm_dev *vdev = file->private_data;

	switch (cmd) {
	case VMSHM_IOCTL_OPEN:
		return vmshm_ioctl_open(vdev, (const char __user *)arg);
	case VMSHM_IOCTL_RING:
		return vmshm_ioctl_ring(vdev, arg);
	case VMSHM_IOCTL_IVPOSITION:
		return vmshm_ioctl_ivposition(vdev);
	}
	return -ENOTTY;
}

static int vmshm_mmap(struct file *file, struct vm_area_struct *vma)
{
	struct vmshm_dev *vdev = file->private_data;
	u32 map_size = 0;
	bool gone;

	mutex_lock(&vdev->lock);
	gone = vdev->gone;
	if (!gone)
		map_size = ioread32(vdev->regs + VMSHM_REG_MAP_SIZE);
	mutex_unlock(&vdev->lock);
	if (gone)
		return -ENODEV;
	if (map_size > vdev->window_size)
		return -EIO;
	vma->vm_page_prot = pgprot_noncached(vma->vm_page_prot);
	/* -EINVAL for anything past MAP_SIZE (rounded up to a page). */
	return vm_iomap_memory(vma, vdev->window_start, map_size);
}

static const struct file_operations vmshm_fops = {
	.owner		= THIS_MODULE,
	.open		= vmshm_open,
	.release	= vmshm_release,
	.read		= vmshm_read,
	.poll		= vmshm_poll,
	.unlocked_ioctl	= vmshm_ioctl,
	.compat_ioctl	= compat_ptr_ioctl,
	.mmap		= vmshm_mmap,
	.llseek		= noop_llseek,
};

/*
 * Find VMShm's capability; return the offset to which VMSHM_CAP_<field> is added to read a
 * field (ABI_VERSION on), or 0. The legacy vendor-specific capability first (the soft
 * function's, QEMU's); then a Vendor-Specific Extended Capability naming VMShm in its VSEC
 * header, which is where a hard IP with no room in its legacy list (UltraScale+) puts the
 * same fields, VMSHM_VSEC_FIELDS bytes further on.
 */
static int vmshm_find_cap(struct pci_dev *pdev)
{
	int pos = pci_find_capability(pdev, PCI_CAP_ID_VNDR);
	u8 len, version;
	u32 hdr;

	while (pos) {
		pci_read_config_byte(pdev, pos + VMSHM_CAP_LEN, &len);
		pci_read_config_byte(pdev, pos + VMSHM_CAP_VERSION, &version);
		if (len == VMSHM_CAP_LENGTH && version == VMSHM_CAP_LAYOUT)
			return pos;
		pos = pci_find_next_capability(pdev, pos, PCI_CAP_ID_VNDR);
	}
	pos = pci_find_ext_capability(pdev, PCI_EXT_CAP_ID_VNDR);
	while (pos) {
		pci_read_config_dword(pdev, pos + PCI_VNDR_HEADER, &hdr);
		if (PCI_VNDR_HEADER_ID(hdr) == VMSHM_VSEC_ID &&
		    PCI_VNDR_HEADER_REV(hdr) == VMSHM_VSEC_REV &&
		    PCI_VNDR_HEADER_LEN(hdr) == VMSHM_VSEC_LENGTH)
			return pos + VMSHM_VSEC_FIELDS;
		pos = pci_find_next_ext_capability(pdev, pos, PCI_EXT_CAP_ID_VNDR);
	}
	return 0;
}

static int vmshm_probe(struct pci_dev *pdev, const struct pci_device_id *id)
{
	struct device *dev = &pdev->dev;
	struct vmshm_dev *vdev;
	u8 regs_bar, window_bar, name_bar;
	void __iomem * const *table;
	int cap, ret;
	u32 ident;

	vdev = kzalloc(sizeof(*vdev), GFP_KERNEL);
	if (!vdev)
		return -ENOMEM;
	kref_init(&vdev->ref);
	vdev->pdev = pdev;
	mutex_init(&vdev->lock);
	init_waitqueue_head(&vdev->wait);
	/* The probe's reference goes when the driver unbinds. */
	ret = devm_add_action_or_reset(dev, vmshm_put, vdev);
	if (ret)
		return ret;

	ret = pcim_enable_device(pdev);
	if (ret)
		return ret;

	cap = vmshm_find_cap(pdev);
	if (!cap) {
		dev_err(dev, "no VMShm capability\n");
		return -ENODEV;
	}
	pci_read_config_byte(pdev, cap + VMSHM_CAP_REGS_BAR, &regs_bar);
	pci_read_config_byte(pdev, cap + VMSHM_CAP_WINDOW_BAR, &window_bar);
	pci_read_config_byte(pdev, cap + VMSHM_CAP_NAME_BAR, &name_bar);
	pci_read_config_dword(pdev, cap + VMSHM_CAP_WINDOW_SIZE,
			      &vdev->window_size);
	pci_read_config_dword(pdev, cap + VMSHM_CAP_NAME_SIZE,
			      &vdev->name_size);
	if (regs_bar >= PCI_STD_NUM_BARS || window_bar >= PCI_STD_NUM_BARS ||
	    name_bar >= PCI_STD_NUM_BARS || vdev->name_size < 2 ||
	    pci_resource_len(pdev, window_bar) < vdev->window_size ||
	    pci_resource_len(pdev, name_bar) < vdev->name_size) {
		dev_err(dev, "capability names BARs %u/%u/%u that do not fit\n",
			regs_bar, window_bar, name_bar);
		return -ENODEV;
	}

	/* The window is mapped too, which claims it; users map it by mmap. */
	ret = pcim_iomap_regions(pdev, BIT(regs_bar) | BIT(window_bar) |
				 BIT(name_bar), "vmshm");
	if (ret)
		return ret;
	table = pcim_iomap_table(pdev);
	vdev->regs = table[regs_bar];
	vdev->names = table[name_bar];
	vdev->window_start = pci_resource_start(pdev, window_bar);
	/* Without Bus Master Enable the device refuses OPEN with EPERM. */
	pci_set_master(pdev);

	ident = ioread32(vdev->regs + VMSHM_REG_ID);
	if (ident != VMSHM_DEVICE_ID) {
		dev_err(dev, "ID register reads %#010x, not %#010x\n", ident,
			VMSHM_DEVICE_ID);
		return -ENODEV;
	}

	/*
	 * The vectors and the handler are the binding's (pcim, devm), so an
	 * unbound function leaves none behind.
	 */
	ret = pci_alloc_irq_vectors(pdev, 1, 1, msi ? PCI_IRQ_ALL_TYPES :
				    PCI_IRQ_LEGACY);
	if (ret > 0) {
		ret = devm_request_irq(dev, pci_irq_vector(pdev, 0), vmshm_irq,
				       IRQF_SHARED, "vmshm", vdev);
		if (ret)
			return ret;
		vdev->has_irq = true;
		/* Masked until a file is open. */
		vmshm_set_mask(vdev, 0);
	} else {
		/* A device before ABI 1.2 has none: the window still works. */
		dev_warn(dev, "no interrupt (%d): read and poll fail\n", ret);
	}

	vdev->id = ida_alloc(&vmshm_ida, GFP_KERNEL);
	if (vdev->id < 0)
		return vdev->id;
	snprintf(vdev->devname, sizeof(vdev->devname), "vmshm%d", vdev->id);
	vdev->misc.minor = MISC_DYNAMIC_MINOR;
	vdev->misc.name = vdev->devname;
	vdev->misc.fops = &vmshm_fops;
	vdev->misc.parent = dev;
	ret = misc_register(&vdev->misc);
	if (ret)
		goto err_ida;
	pci_set_drvdata(pdev, vdev);
	dev_info(dev, "/dev/%s: window %u bytes at %pa, name buffer %u bytes\n",
		 vdev->devname, vdev->window_size, &vdev->window_start,
		 vdev->name_size);
	if (vdev->has_irq)
		dev_info(dev, "/dev/%s: %s, irq %d\n", vdev->devname,
			 pdev->msi_enabled ? "MSI" : "INTx",
			 pci_irq_vector(pdev, 0));
	return 0;

err_ida:
	ida_free(&vmshm_ida, vdev->id);
	return ret;
}

static void vmshm_remove(struct pci_dev *pdev)
{
	struct vmshm_dev *vdev = pci_get_drvdata(pdev);

	misc_deregister(&vdev->misc);
	mutex_lock(&vdev->lock);
	/* An open file can no longer release the object: do it now. */
	if (test_bit(0, &vdev->busy)) {
		vmshm_set_mask(vdev, 0);
		ioread32(vdev->regs + VMSHM_REG_CLOSE);
	}
	WRITE_ONCE(vdev->gone, true);
	mutex_unlock(&vdev->lock);
	/* A reader blocked on the removed function returns -ENODEV. */
	wake_up_interruptible(&vdev->wait);
	ida_free(&vmshm_ida, vdev->id);
}

static const struct pci_device_id vmshm_ids[] = {
	{ PCI_DEVICE(VMSHM_PCI_VENDOR_ID, VMSHM_PCI_DEVICE_ID) },
	{ }
};
MODULE_DEVICE_TABLE(pci, vmshm_ids);

static struct pci_driver vmshm_driver = {
	.name		= "vmshm",
	.id_table	= vmshm_ids,
	.probe		= vmshm_probe,
	.remove		= vmshm_remove,
};
module_pci_driver(vmshm_driver);

MODULE_DESCRIPTION("VMShm: host shared memory through a PCI window");
MODULE_LICENSE("GPL");
