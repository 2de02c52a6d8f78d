using System.Buffers;
using System.Text;

namespace QubesFirewall.Engine.Io;

/// <summary>
/// Bytes in an array rented from the shared pool and given back on <see cref="Dispose"/>: a file of a 10,000-rule
/// qube (about 3 MB) read or written without a new array on the large object heap each time, whose allocations bring
/// the next full collection of the whole process's heap nearer (in pwsh, of everything the session holds).
/// </summary>
internal sealed class PooledBytes : IDisposable
{
    private byte[] _array;

    public PooledBytes(int capacity = 4096) => _array = ArrayPool<byte>.Shared.Rent(Math.Max(capacity, 256));

    public int Length { get; private set; }

    /// <summary>The rented array; its first <see cref="Length"/> bytes are the content.</summary>
    public byte[] Array => _array;

    public ReadOnlySpan<byte> Span => _array.AsSpan(0, Length);

    /// <summary>The whole file.</summary>
    public static PooledBytes ReadFile(string path)
    {
        using var handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.Read);
        var size = RandomAccess.GetLength(handle);
        if (size >= System.Array.MaxLength) throw new IOException($"{path} is too large to read.");
        var bytes = new PooledBytes((int)size + 1);
        try
        {
            while (true)
            {
                bytes.Reserve(1);
                var read = RandomAccess.Read(handle, bytes._array.AsSpan(bytes.Length), bytes.Length);
                if (read == 0) return bytes;
                bytes.Length += read;
            }
        }
        catch
        {
            bytes.Dispose();
            throw;
        }
    }

    public PooledBytes Append(ReadOnlySpan<byte> bytes)
    {
        Reserve(bytes.Length);
        bytes.CopyTo(_array.AsSpan(Length));
        Length += bytes.Length;
        return this;
    }

    /// <summary>The text in UTF-8.</summary>
    public PooledBytes Append(ReadOnlySpan<char> text)
    {
        Reserve(Encoding.UTF8.GetMaxByteCount(text.Length));
        Length += Encoding.UTF8.GetBytes(text, _array.AsSpan(Length));
        return this;
    }

    // Room for at least count more bytes.
    private void Reserve(int count)
    {
        if (_array.Length - Length >= count) return;
        var wanted = (long)Length + count;
        if (wanted > System.Array.MaxLength) throw new IOException("The content is too large.");
        var larger = ArrayPool<byte>.Shared.Rent((int)Math.Min(Math.Max(wanted, 2L * _array.Length), System.Array.MaxLength));
        _array.AsSpan(0, Length).CopyTo(larger);
        ArrayPool<byte>.Shared.Return(_array);
        _array = larger;
    }

    public void Dispose()
    {
        var array = _array;
        _array = [];
        Length = 0;
        if (array.Length > 0) ArrayPool<byte>.Shared.Return(array);
    }
}
