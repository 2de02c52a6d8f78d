namespace QubesFirewall.Engine.Backends;

/// <summary>dom0's own files (the qrexec policy) in the offline root: under <c>qubesfirewall-state/dom0/</c>.</summary>
public sealed partial class OfflineRoot
{
    /// <summary>The folder that stands for dom0's root directory: <c>qubesfirewall-state/dom0</c>.</summary>
    public string Dom0Root => Path.Combine(StatePath, "dom0");

    /// <summary>Where the state folder keeps a dom0 file, e.g. <c>qubesfirewall-state/dom0/etc/qubes/policy.d/70-qubesfirewall.policy</c>.</summary>
    public string Dom0FilePath(string path) => Dom0Files.Map(Dom0Root, Dom0Files.ValidateFile(path, write: false));

    public IReadOnlyList<string> ListDom0Files(string directory) => Dom0Files.List(Dom0Root, directory);

    public string? ReadDom0File(string path) => Dom0Files.Read(Dom0Root, path);

    public void WriteDom0File(string path, string content, UnixFileMode mode) => Dom0Files.Write(Dom0Root, path, content, mode);

    public bool DeleteDom0File(string path) => Dom0Files.Delete(Dom0Root, path);
}
