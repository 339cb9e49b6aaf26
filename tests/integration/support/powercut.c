/*
 * A power cut for tests: an LD_PRELOAD shim that keeps, beside a directory tree, the
 * image of it that would survive if the power failed now, losing every write that was
 * not made durable.
 *
 * The model (strict POSIX, as ext4 with delayed allocation behaves at worst):
 *   - a file's content is durable only as it was at its last fsync/fdatasync;
 *   - a directory's entries (created, renamed, removed names) are durable only as they
 *     were at the directory's last fsync;
 *   - a name whose file was never synced survives, if its directory was, as an empty file.
 * Directories themselves are assumed to exist once any of them is synced (cairn syncs the
 * parents of every folder it creates).
 *
 * A file's content is kept by device, inode and birth time (statx), so the file system
 * must report birth times (ext4, xfs, btrfs and tmpfs do).
 *
 * Only fsync and fdatasync are intercepted: at each, the real tree is read and the image
 * updated. Killing the process with SIGKILL at any moment then leaves, in the image, the
 * state after a power cut at that moment. Writes, renames and removals pass straight
 * through to the real tree.
 *
 * Environment:
 *   POWERCUT_ROOT    the real directory watched (absolute, no trailing slash)
 *   POWERCUT_IMAGE   the image: what survives, laid out as the real directory
 *   POWERCUT_STORE   synced file contents by (device, inode), on the image's file system
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static const char *env(const char *name) {
    const char *v = getenv(name);
    return (v && *v) ? v : NULL;
}

/* The part of `path` below POWERCUT_ROOT ("" for the root itself), or NULL. */
static const char *below_root(const char *path) {
    const char *root = env("POWERCUT_ROOT");
    if (!root) return NULL;
    size_t n = strlen(root);
    if (strncmp(path, root, n) != 0) return NULL;
    if (path[n] != '\0' && path[n] != '/') return NULL;
    return path + n;
}

static int path_of_fd(int fd, char *out, size_t len) {
    char link[64];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t r = readlink(link, out, len - 1);
    if (r < 0) return -1;
    out[r] = '\0';
    return 0;
}

/* Where the synced content of the file at `fd_or_path` is kept: by device, inode and
 * birth time, so that an inode number reused by a new file never finds an old file's
 * content. */
static int store_path(char *out, size_t len, int dirfd, const char *path, int flags) {
    struct statx sx;
    if (statx(dirfd, path, flags | AT_SYMLINK_NOFOLLOW, STATX_INO | STATX_BTIME, &sx) != 0)
        return -1;
    snprintf(out, len, "%s/%x-%x-%llx-%llx-%x", env("POWERCUT_STORE"), sx.stx_dev_major,
             sx.stx_dev_minor, (unsigned long long)sx.stx_ino,
             (unsigned long long)sx.stx_btime.tv_sec, sx.stx_btime.tv_nsec);
    return 0;
}

/* Copy the file open as `fd` into the store, atomically. */
static void keep_file(int fd) {
    char link[64], dest[PATH_MAX], tmp[PATH_MAX];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    if (store_path(dest, sizeof dest, fd, "", AT_EMPTY_PATH) != 0) return;
    int in = open(link, O_RDONLY | O_CLOEXEC);
    if (in < 0) return;
    snprintf(tmp, sizeof tmp, "%s.tmp%ld", dest, (long)gettid());
    int out = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (out < 0) {
        close(in);
        return;
    }
    char buf[1 << 16];
    ssize_t r;
    int ok = 1;
    while ((r = read(in, buf, sizeof buf)) > 0) {
        char *p = buf;
        while (r > 0) {
            ssize_t w = write(out, p, (size_t)r);
            if (w <= 0) {
                ok = 0;
                break;
            }
            p += w;
            r -= w;
        }
        if (!ok) break;
    }
    if (r < 0) ok = 0;
    close(in);
    close(out);
    if (ok) rename(tmp, dest);
    else unlink(tmp);
}

static void remove_tree(const char *path) {
    struct stat st;
    if (lstat(path, &st) != 0) return;
    if (!S_ISDIR(st.st_mode)) {
        unlink(path);
        return;
    }
    DIR *d = opendir(path);
    if (d) {
        struct dirent *e;
        char child[PATH_MAX];
        while ((e = readdir(d)) != NULL) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            snprintf(child, sizeof child, "%s/%s", path, e->d_name);
            remove_tree(child);
        }
        closedir(d);
    }
    rmdir(path);
}

static void mkdirs(const char *path) {
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s", path);
    for (char *s = p + 1; *s; s++) {
        if (*s == '/') {
            *s = '\0';
            mkdir(p, 0755);
            *s = '/';
        }
    }
    mkdir(p, 0755);
}

/* Make the image's copy of directory `real` (at `image`) hold exactly its entries now. */
static void keep_dir(const char *real, const char *image) {
    mkdirs(image);
    DIR *d = opendir(real);
    if (!d) return;
    struct dirent *e;
    char rpath[PATH_MAX], ipath[PATH_MAX], spath[PATH_MAX], tmp[PATH_MAX];
    while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        snprintf(rpath, sizeof rpath, "%s/%s", real, e->d_name);
        snprintf(ipath, sizeof ipath, "%s/%s", image, e->d_name);
        struct stat st;
        if (lstat(rpath, &st) != 0) continue;
        if (S_ISDIR(st.st_mode)) {
            mkdir(ipath, 0755);
            continue;
        }
        if (!S_ISREG(st.st_mode)) continue;
        if (store_path(spath, sizeof spath, AT_FDCWD, rpath, 0) != 0) continue;
        struct stat kept, there;
        snprintf(tmp, sizeof tmp, "%s/.powercut-%ld", image, (long)gettid());
        if (stat(spath, &kept) == 0) {
            if (lstat(ipath, &there) == 0 && there.st_ino == kept.st_ino) continue;
            unlink(tmp);
            if (link(spath, tmp) == 0) rename(tmp, ipath);
        } else if (lstat(ipath, &there) != 0) {
            /* Never synced: the name survives, its content does not. */
            int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
            if (fd >= 0) {
                close(fd);
                rename(tmp, ipath);
            }
        }
    }
    closedir(d);
    /* Names the real directory no longer has are gone from the image too. */
    DIR *i = opendir(image);
    if (!i) return;
    while ((e = readdir(i)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        if (!strncmp(e->d_name, ".powercut-", 10)) continue;
        snprintf(rpath, sizeof rpath, "%s/%s", real, e->d_name);
        struct stat st;
        if (lstat(rpath, &st) != 0) {
            snprintf(ipath, sizeof ipath, "%s/%s", image, e->d_name);
            remove_tree(ipath);
        }
    }
    closedir(i);
}

static void synced(int fd) {
    if (!env("POWERCUT_ROOT") || !env("POWERCUT_IMAGE") || !env("POWERCUT_STORE")) return;
    char path[PATH_MAX];
    if (path_of_fd(fd, path, sizeof path) != 0) return;
    const char *rel = below_root(path);
    if (!rel) return;
    struct stat st;
    if (fstat(fd, &st) != 0) return;
    int saved = errno;
    pthread_mutex_lock(&lock);
    if (S_ISREG(st.st_mode)) {
        keep_file(fd);
    } else if (S_ISDIR(st.st_mode)) {
        char image[PATH_MAX];
        snprintf(image, sizeof image, "%s%s", env("POWERCUT_IMAGE"), rel);
        keep_dir(path, image);
    }
    pthread_mutex_unlock(&lock);
    errno = saved;
}

int fsync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    int r = real(fd);
    if (r == 0) synced(fd);
    return r;
}

int fdatasync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    int r = real(fd);
    if (r == 0) synced(fd);
    return r;
}
