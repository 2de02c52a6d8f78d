using System.Text;

namespace QubesFirewall.Engine.Io;

/// <summary>
/// Crash-safe file replacement: write a temporary file beside the target, fsync it,
/// rename it over the target, fsync the directory. A reader sees the old or the new
/// content, never a mix, even if the writer is killed at any moment.
/// </summary>
public static class AtomicFile
{
    public static readonly UTF8Encoding Utf8NoBom = new(encoderShouldEmitUTF8Identifier: false);

    public static void WriteAllText(string path, string content, UnixFileMode? mode = null)
        => WriteAllBytes(path, Utf8NoBom.GetBytes(content), mode);

    public static void WriteAllBytes(string path, byte[] content, UnixFileMode? mode = null)
    {
        var full = Path.GetFullPath(path);
        var dir = Path.GetDirectoryName(full)!;
        Directory.CreateDirectory(dir);
        // The temporary name keeps the target's name as a prefix but never its extension,
        // so directory scanners that match on the extension (qrexec's *.policy) skip it.
        var tmp = Path.Combine(dir, "." + Path.GetFileName(full) + "~" + Guid.NewGuid().ToString("N")[..8] + ".tmp");
        try
        {
            using (var fs = new FileStream(tmp, FileMode.CreateNew, FileAccess.Write, FileShare.None))
            {
                fs.Write(content);
                fs.Flush(flushToDisk: true);
            }
            if (!OperatingSystem.IsWindows())
            {
                var keep = mode ?? (File.Exists(full) ? File.GetUnixFileMode(full) : (UnixFileMode?)null);
                if (keep is { } m) File.SetUnixFileMode(tmp, m);
            }
            File.Move(tmp, full, overwrite: true);
            FsyncDirectory(dir);
        }
        catch
        {
            try { File.Delete(tmp); } catch (IOException) { } catch (UnauthorizedAccessException) { }
            throw;
        }
    }

    private static void FsyncDirectory(string dir)
    {
        if (OperatingSystem.IsWindows()) return;
        try
        {
            using var handle = File.OpenHandle(dir, FileMode.Open, FileAccess.Read, FileShare.ReadWrite, FileOptions.None);
            RandomAccess.FlushToDisk(handle);
        }
        catch (UnauthorizedAccessException) { }
        catch (IOException) { }
    }
}
