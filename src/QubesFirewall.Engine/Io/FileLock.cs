namespace QubesFirewall.Engine.Io;

/// <summary>
/// An exclusive advisory lock held on a lock file next to the data it guards
/// (a read-modify-write of firewall.xml or qubes.xml holds it from read to rename).
/// Works across processes: the OS releases it when the holder dies, so a killed
/// writer never leaves the file locked.
/// </summary>
public sealed class FileLock : IDisposable
{
    private readonly FileStream _stream;

    private FileLock(FileStream stream) => _stream = stream;

    public static FileLock Acquire(string lockPath, TimeSpan? timeout = null)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(lockPath))!);
        var deadline = DateTime.UtcNow + (timeout ?? TimeSpan.FromSeconds(60));
        var delay = 1;
        while (true)
        {
            try
            {
                // FileShare.None on Unix takes an flock(LOCK_EX) on the file.
                var fs = new FileStream(lockPath, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
                return new FileLock(fs);
            }
            catch (IOException) when (DateTime.UtcNow < deadline)
            {
                Thread.Sleep(delay);
                delay = Math.Min(delay * 2, 50);
            }
        }
    }

    /// <summary>The lock file that guards <paramref name="dataPath"/>.</summary>
    public static string PathFor(string dataPath)
    {
        var full = Path.GetFullPath(dataPath);
        return Path.Combine(Path.GetDirectoryName(full)!, "." + Path.GetFileName(full) + ".lock");
    }

    public void Dispose() => _stream.Dispose();
}
