/*
 * shm_writer: a plain C peer for the VMShm host-model tests.
 *
 *   shm_writer write NAME SIZE TEXT   create NAME if needed (mode 0600), grow it to SIZE bytes
 *                                     if it is smaller, store TEXT and its NUL at offset 0
 *   shm_writer read NAME              print the NUL-terminated string at offset 0
 *
 * It uses nothing but shm_open and mmap, so it shows that the Python model speaks to ordinary
 * POSIX programs and not only to itself.
 *
 * Build: cc -o shm_writer shm_writer.c -lrt
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static int fail(const char *what, const char *name)
{
    fprintf(stderr, "shm_writer: %s '%s': %s\n", what, name, strerror(errno));
    return 1;
}

static int do_write(const char *name, const char *size_text, const char *text)
{
    char *end;
    errno = 0;
    unsigned long long size = strtoull(size_text, &end, 0);
    if (errno || *end || end == size_text) {
        fprintf(stderr, "shm_writer: SIZE must be a number of bytes, not '%s'\n", size_text);
        return 2;
    }
    size_t len = strlen(text) + 1;
    if (size < len) {
        fprintf(stderr, "shm_writer: SIZE %llu cannot hold TEXT and its NUL (%zu bytes)\n",
                size, len);
        return 2;
    }

    int fd = shm_open(name, O_CREAT | O_RDWR, 0600);
    if (fd < 0)
        return fail("cannot open", name);
    struct stat st;
    if (fstat(fd, &st) < 0)
        return fail("cannot stat", name);
    /* Never shrink: the object may be larger and hold data someone else owns. */
    if ((unsigned long long)st.st_size < size && ftruncate(fd, (off_t)size) < 0)
        return fail("cannot resize", name);

    char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED)
        return fail("cannot map", name);
    memcpy(p, text, len);
    munmap(p, len);
    close(fd);
    return 0;
}

static int do_read(const char *name)
{
    int fd = shm_open(name, O_RDONLY, 0);
    if (fd < 0)
        return fail("cannot open", name);
    struct stat st;
    if (fstat(fd, &st) < 0)
        return fail("cannot stat", name);
    size_t size = (size_t)st.st_size;
    if (size == 0) {
        /* mmap refuses zero bytes; an empty object holds the empty string. */
        putchar('\n');
        close(fd);
        return 0;
    }
    char *p = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED)
        return fail("cannot map", name);
    const char *nul = memchr(p, '\0', size);
    fwrite(p, 1, nul ? (size_t)(nul - p) : size, stdout);
    putchar('\n');
    munmap(p, size);
    close(fd);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 5 && strcmp(argv[1], "write") == 0)
        return do_write(argv[2], argv[3], argv[4]);
    if (argc == 3 && strcmp(argv[1], "read") == 0)
        return do_read(argv[2]);
    fprintf(stderr, "usage: shm_writer write NAME SIZE TEXT\n"
                    "       shm_writer read NAME\n");
    return 2;
}
